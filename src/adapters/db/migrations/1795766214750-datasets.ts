import type { MigrationInterface, QueryRunner } from "typeorm";

export class Datasets1795766214750 implements MigrationInterface {
  name = "Datasets1795766214750";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TYPE "public"."dataset_status" AS ENUM('Initialed', 'Enabled', 'Disabled')`);
    await q.query(`CREATE TABLE "datasets" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "name" character varying(20) NOT NULL, "status" "public"."dataset_status" NOT NULL DEFAULT 'Initialed', "params" jsonb NOT NULL DEFAULT '{}', "creator_id" uuid, "allowed_roles" text array NOT NULL DEFAULT '{}', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "updated_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "UQ_datasets_name" UNIQUE ("name"), CONSTRAINT "PK_1bf831e43c559a240303e23d038" PRIMARY KEY ("id"))`);
    await q.query(`CREATE INDEX "IDX_datasets_created" ON "datasets"  ("created_at", "id")`);
    await q.query(`CREATE TABLE "dataset_items" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "dataset_id" uuid NOT NULL, "filename" character varying(255) NOT NULL, "name" character varying(255) NOT NULL, "item_type" character varying(64) NOT NULL, "params" jsonb NOT NULL DEFAULT '{}', "object_key" text NOT NULL, "position" integer NOT NULL DEFAULT '0', CONSTRAINT "UQ_dataset_items_dataset_filename" UNIQUE ("dataset_id", "filename"), CONSTRAINT "PK_7208ee4da879a7cbb19c7858130" PRIMARY KEY ("id"))`);
    await q.query(`ALTER TABLE "dataset_items" ADD CONSTRAINT "FK_a918413f4732da3ac8fa7837a48" FOREIGN KEY ("dataset_id") REFERENCES "datasets"("id") ON DELETE CASCADE ON UPDATE NO ACTION`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "dataset_items" DROP CONSTRAINT "FK_a918413f4732da3ac8fa7837a48"`);
    await q.query(`DROP TABLE "dataset_items"`);
    await q.query(`DROP INDEX "public"."IDX_datasets_created"`);
    await q.query(`DROP TABLE "datasets"`);
    await q.query(`DROP TYPE "public"."dataset_status"`);
  }
}
