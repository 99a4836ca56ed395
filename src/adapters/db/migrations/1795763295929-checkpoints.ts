import type { MigrationInterface, QueryRunner } from "typeorm";

/** Checkpoints and their files (the type enum is shared by both tables, so it is created once). */
export class Checkpoints1795763295929 implements MigrationInterface {
  name = "Checkpoints1795763295929";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TYPE "public"."checkpoint_type" AS ENUM('Stable-diffusion', 'embeddings', 'Lora', 'hypernetworks', 'ControlNet', 'VAE')`);
    await q.query(`CREATE TYPE "public"."checkpoint_status" AS ENUM('Initial', 'Active', 'Disabled', 'Failed')`);
    await q.query(`CREATE TABLE "checkpoints" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "checkpoint_type" "public"."checkpoint_type" NOT NULL, "status" "public"."checkpoint_status" NOT NULL DEFAULT 'Initial', "prefix" text NOT NULL, "source" character varying(8) NOT NULL, "message" text, "creator_id" uuid, "allowed_roles" text array NOT NULL DEFAULT '{}', "failure_reason" text, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_dfcc46a91d96ecba8a8dcd8b11c" PRIMARY KEY ("id"))`);
    await q.query(`CREATE INDEX "IDX_checkpoints_created" ON "checkpoints"  ("created_at", "id")`);
    await q.query(`CREATE TABLE "checkpoint_files" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "checkpoint_id" uuid NOT NULL, "checkpoint_type" "public"."checkpoint_type" NOT NULL, "name" character varying(255) NOT NULL, "object_key" text NOT NULL, "upload_id" text, "parts_number" integer NOT NULL DEFAULT '0', "source_url" text, "size_bytes" bigint, "position" integer NOT NULL DEFAULT '0', CONSTRAINT "UQ_checkpoint_files_type_name" UNIQUE ("checkpoint_type", "name"), CONSTRAINT "PK_097bda506e8d7fda2804436415d" PRIMARY KEY ("id"))`);
    await q.query(`ALTER TABLE "checkpoint_files" ADD CONSTRAINT "FK_9c602fb9a3af4ccb9746a3e173e" FOREIGN KEY ("checkpoint_id") REFERENCES "checkpoints"("id") ON DELETE CASCADE ON UPDATE NO ACTION`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "checkpoint_files" DROP CONSTRAINT "FK_9c602fb9a3af4ccb9746a3e173e"`);
    await q.query(`DROP TABLE "checkpoint_files"`);
    await q.query(`DROP INDEX "public"."IDX_checkpoints_created"`);
    await q.query(`DROP TABLE "checkpoints"`);
    await q.query(`DROP TYPE "public"."checkpoint_status"`);
    await q.query(`DROP TYPE "public"."checkpoint_type"`);
  }
}
