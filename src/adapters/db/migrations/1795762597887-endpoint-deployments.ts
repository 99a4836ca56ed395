import type { MigrationInterface, QueryRunner } from "typeorm";

export class EndpointDeployments1795762597887 implements MigrationInterface {
  name = "EndpointDeployments1795762597887";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TYPE "public"."endpoint_type" AS ENUM('Async', 'Real-time')`);
    await q.query(`CREATE TYPE "public"."endpoint_status" AS ENUM('Creating', 'InService', 'Updating', 'Deleting', 'Deleted', 'Failed')`);
    await q.query(`CREATE TABLE "endpoints" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "name" character varying(63) NOT NULL, "endpoint_type" "public"."endpoint_type" NOT NULL, "instance_type" character varying(32) NOT NULL, "initial_instance_count" integer NOT NULL, "autoscaling" boolean NOT NULL, "min_instance_number" integer NOT NULL, "max_instance_number" integer NOT NULL, "current_instance_count" integer NOT NULL DEFAULT '0', "status" "public"."endpoint_status" NOT NULL DEFAULT 'Creating', "owner_roles" text array NOT NULL DEFAULT '{}', "creator_id" uuid, "image_uri" text NOT NULL, "custom_image" boolean NOT NULL DEFAULT false, "model_name" character varying(63) NOT NULL, "config_name" character varying(63) NOT NULL, "failure_reason" text, "status_checks" integer NOT NULL DEFAULT '0', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "in_service_at" TIMESTAMP WITH TIME ZONE, "deleted_at" TIMESTAMP WITH TIME ZONE, "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_70835610dfa54ad5d990e02f70a" PRIMARY KEY ("id"))`);
    await q.query(`CREATE UNIQUE INDEX "UQ_endpoints_live_name" ON "endpoints"  ("name") WHERE "status" <> 'Deleted'`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "public"."UQ_endpoints_live_name"`);
    await q.query(`DROP TABLE "endpoints"`);
    await q.query(`DROP TYPE "public"."endpoint_status"`);
    await q.query(`DROP TYPE "public"."endpoint_type"`);
  }
}
