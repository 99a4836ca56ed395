import type { MigrationInterface, QueryRunner } from "typeorm";

export class Trainings1795770790811 implements MigrationInterface {
  name = "Trainings1795770790811";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TYPE "public"."model_status" AS ENUM('Initial', 'Creating', 'Complete', 'Fail')`);
    await q.query(`CREATE TABLE "models" ("endpoint_name" character varying(63), "payload_key" text NOT NULL, "invoke_attempted_at" TIMESTAMP WITH TIME ZONE, "invoked" boolean NOT NULL DEFAULT false, "output_location" text, "failure_location" text, "output_checks" integer NOT NULL DEFAULT '0', "failure_reason" text, "creator_id" uuid, "allowed_roles" text array NOT NULL DEFAULT '{}', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "completed_at" TIMESTAMP WITH TIME ZONE, "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "id" uuid NOT NULL, "name" character varying(40) NOT NULL, "model_type" character varying(32) NOT NULL, "status" "public"."model_status" NOT NULL DEFAULT 'Initial', "checkpoint_id" uuid NOT NULL, "params" jsonb NOT NULL DEFAULT '{}', "output_prefix" text NOT NULL, "output_keys" text array NOT NULL DEFAULT '{}', "result" jsonb, CONSTRAINT "UQ_models_name" UNIQUE ("name"), CONSTRAINT "PK_ef9ed7160ea69013636466bf2d5" PRIMARY KEY ("id"))`);
    await q.query(`CREATE INDEX "IDX_models_created" ON "models"  ("created_at", "id")`);
    await q.query(`CREATE TYPE "public"."training_status" AS ENUM('Initial', 'Starting', 'Training', 'Stopping', 'Complete', 'Fail', 'Stopped')`);
    await q.query(`CREATE TABLE "trainings" ("id" uuid NOT NULL, "train_type" character varying(32) NOT NULL, "model_id" uuid NOT NULL, "model_name" character varying(40) NOT NULL, "status" "public"."training_status" NOT NULL DEFAULT 'Initial', "secondary_status" character varying(64), "sagemaker_job_name" character varying(63) NOT NULL, "job_created" boolean NOT NULL DEFAULT false, "instance_type" character varying(32) NOT NULL, "params" jsonb NOT NULL DEFAULT '{}', "dataset_names" text array NOT NULL DEFAULT '{}', "class_dataset_names" text array NOT NULL DEFAULT '{}', "input_files" text array NOT NULL DEFAULT '{}', "input_prefix" text NOT NULL, "output_prefix" text NOT NULL, "spot" boolean NOT NULL DEFAULT false, "max_runtime_seconds" integer NOT NULL, "stop_requested" boolean NOT NULL DEFAULT false, "transitions_seen" integer NOT NULL DEFAULT '0', "metrics" jsonb, "status_checks" integer NOT NULL DEFAULT '0', "artifact_uri" text, "checkpoint_id" uuid, "failure_reason" text, "creator_id" uuid, "allowed_roles" text array NOT NULL DEFAULT '{}', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "started_at" TIMESTAMP WITH TIME ZONE, "completed_at" TIMESTAMP WITH TIME ZONE, "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_b67237502b175163e47dc85018d" PRIMARY KEY ("id"))`);
    await q.query(`CREATE INDEX "IDX_trainings_status" ON "trainings"  ("status")`);
    await q.query(`CREATE INDEX "IDX_trainings_created" ON "trainings"  ("created_at", "id")`);
    await q.query(`CREATE TYPE "public"."merge_status" AS ENUM('Queued', 'Merging', 'Complete', 'Fail')`);
    await q.query(`CREATE TABLE "checkpoint_merges" ("endpoint_name" character varying(63), "payload_key" text NOT NULL, "invoke_attempted_at" TIMESTAMP WITH TIME ZONE, "invoked" boolean NOT NULL DEFAULT false, "output_location" text, "failure_location" text, "output_checks" integer NOT NULL DEFAULT '0', "failure_reason" text, "creator_id" uuid, "allowed_roles" text array NOT NULL DEFAULT '{}', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "completed_at" TIMESTAMP WITH TIME ZONE, "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "id" uuid NOT NULL, "status" "public"."merge_status" NOT NULL DEFAULT 'Queued', "source_ids" uuid array NOT NULL, "source_names" text array NOT NULL, "method" character varying(32) NOT NULL, "ratio" double precision NOT NULL, "result_name" character varying(255) NOT NULL, "options" jsonb NOT NULL DEFAULT '{}', "output_prefix" text NOT NULL, "checkpoint_id" uuid, CONSTRAINT "PK_57d121f92f879e0a51beb4f3ea3" PRIMARY KEY ("id"))`);
    await q.query(`CREATE INDEX "IDX_checkpoint_merges_created" ON "checkpoint_merges"  ("created_at", "id")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "public"."IDX_checkpoint_merges_created"`);
    await q.query(`DROP TABLE "checkpoint_merges"`);
    await q.query(`DROP TYPE "public"."merge_status"`);
    await q.query(`DROP INDEX "public"."IDX_trainings_created"`);
    await q.query(`DROP INDEX "public"."IDX_trainings_status"`);
    await q.query(`DROP TABLE "trainings"`);
    await q.query(`DROP TYPE "public"."training_status"`);
    await q.query(`DROP INDEX "public"."IDX_models_created"`);
    await q.query(`DROP TABLE "models"`);
    await q.query(`DROP TYPE "public"."model_status"`);
  }
}
