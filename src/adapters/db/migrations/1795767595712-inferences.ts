import type { MigrationInterface, QueryRunner } from "typeorm";

export class Inferences1795767595712 implements MigrationInterface {
  name = "Inferences1795767595712";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TYPE "public"."inference_status" AS ENUM('CREATED', 'QUEUED', 'DISPATCHED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')`);
    await q.query(`CREATE TABLE "inferences" ("id" uuid NOT NULL, "task_type" character varying(32) NOT NULL, "status" "public"."inference_status" NOT NULL DEFAULT 'CREATED', "endpoint_id" uuid NOT NULL, "endpoint_name" character varying(63) NOT NULL, "creator_id" uuid, "owner_roles" text array NOT NULL DEFAULT '{}', "models" jsonb NOT NULL DEFAULT '{}', "params_key" text NOT NULL, "payload_key" text NOT NULL, "payload_written" boolean NOT NULL DEFAULT false, "invoked" boolean NOT NULL DEFAULT false, "output_location" text, "failure_location" text, "image_keys" text array NOT NULL DEFAULT '{}', "param_file_key" text, "failure_reason" text, "idempotency_key" character varying(255), "request_hash" character varying(64), "progress_token_hash" character varying(64), "last_step" integer NOT NULL DEFAULT '0', "total_steps" integer, "preview_key" text, "cancel_requested" boolean NOT NULL DEFAULT false, "output_checks" integer NOT NULL DEFAULT '0', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "queued_at" TIMESTAMP WITH TIME ZONE, "dispatched_at" TIMESTAMP WITH TIME ZONE, "completed_at" TIMESTAMP WITH TIME ZONE, "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_b69ebc006a62e0ec12d3a0943af" PRIMARY KEY ("id"))`);
    await q.query(`CREATE UNIQUE INDEX "UQ_inferences_creator_idempotency" ON "inferences"  ("creator_id", "idempotency_key") WHERE "idempotency_key" IS NOT NULL`);
    await q.query(`CREATE INDEX "IDX_inferences_endpoint_status" ON "inferences"  ("endpoint_id", "status")`);
    await q.query(`CREATE INDEX "IDX_inferences_created" ON "inferences"  ("created_at", "id")`);
    await q.query(`CREATE INDEX "IDX_inferences_creator_created" ON "inferences"  ("creator_id", "created_at", "id")`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "public"."IDX_inferences_creator_created"`);
    await q.query(`DROP INDEX "public"."IDX_inferences_created"`);
    await q.query(`DROP INDEX "public"."IDX_inferences_endpoint_status"`);
    await q.query(`DROP INDEX "public"."UQ_inferences_creator_idempotency"`);
    await q.query(`DROP TABLE "inferences"`);
    await q.query(`DROP TYPE "public"."inference_status"`);
  }
}
