import type { MigrationInterface, QueryRunner } from "typeorm";

export class WebUiEndpoints1795770766707 implements MigrationInterface {
  name = "WebUiEndpoints1795770766707";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TYPE "public"."endpoint_provider" AS ENUM('sagemaker', 'webui')`);
    await q.query(`ALTER TABLE "endpoints" ADD "provider" "public"."endpoint_provider" NOT NULL DEFAULT 'sagemaker'`);
    await q.query(`ALTER TABLE "endpoints" ADD "base_url" text`);
    await q.query(`ALTER TABLE "endpoints" ADD "credentials_sealed" text`);
    await q.query(`ALTER TABLE "endpoints" ADD "server_models" text array NOT NULL DEFAULT '{}'`);
    await q.query(`ALTER TABLE "endpoints" ADD "health_failures" integer NOT NULL DEFAULT '0'`);
    await q.query(`ALTER TABLE "endpoints" ADD "last_health_at" TIMESTAMP WITH TIME ZONE`);
    await q.query(`ALTER TABLE "inferences" ADD "slot_claimed_at" TIMESTAMP WITH TIME ZONE`);
    await q.query(`ALTER TABLE "inferences" ADD "invoke_started_at" TIMESTAMP WITH TIME ZONE`);
    await q.query(`ALTER TABLE "inferences" ADD "run_attempts" integer NOT NULL DEFAULT '0'`);
    await q.query(`ALTER TABLE "inferences" ADD "last_position" integer`);
    await q.query(`CREATE INDEX "IDX_inferences_endpoint_queue" ON "inferences"  ("endpoint_id", "queued_at", "id") WHERE "status" = 'QUEUED'`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`DROP INDEX "public"."IDX_inferences_endpoint_queue"`);
    await q.query(`ALTER TABLE "inferences" DROP COLUMN "last_position"`);
    await q.query(`ALTER TABLE "inferences" DROP COLUMN "run_attempts"`);
    await q.query(`ALTER TABLE "inferences" DROP COLUMN "invoke_started_at"`);
    await q.query(`ALTER TABLE "inferences" DROP COLUMN "slot_claimed_at"`);
    await q.query(`ALTER TABLE "endpoints" DROP COLUMN "last_health_at"`);
    await q.query(`ALTER TABLE "endpoints" DROP COLUMN "health_failures"`);
    await q.query(`ALTER TABLE "endpoints" DROP COLUMN "server_models"`);
    await q.query(`ALTER TABLE "endpoints" DROP COLUMN "credentials_sealed"`);
    await q.query(`ALTER TABLE "endpoints" DROP COLUMN "base_url"`);
    await q.query(`ALTER TABLE "endpoints" DROP COLUMN "provider"`);
    await q.query(`DROP TYPE "public"."endpoint_provider"`);
  }
}
