import type { MigrationInterface, QueryRunner } from "typeorm";

/**
 * Users, roles, API keys, settings, the event log and system checks. The statements are the ones
 * TypeORM's schema builder derives from the entities, so that a test can assert they still match.
 */
export class Foundation1764230400000 implements MigrationInterface {
  name = "Foundation1764230400000";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`CREATE TABLE "roles" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "name" character varying(64) NOT NULL, "permissions" text array NOT NULL DEFAULT '{}', "creator_id" uuid, "builtin" boolean NOT NULL DEFAULT false, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "UQ_648e3f5447f725579d7d4ffdfb7" UNIQUE ("name"), CONSTRAINT "PK_c1433d71a4838793a49dcad46ab" PRIMARY KEY ("id"))`);
    await q.query(`CREATE TABLE "users" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "username" character varying(64) NOT NULL, "password_hash" text, "creator_id" uuid, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "UQ_fe0bb3f6520ee0469504521e710" UNIQUE ("username"), CONSTRAINT "PK_a3ffb1c0c8416b9fc6f907b7433" PRIMARY KEY ("id"))`);
    await q.query(`CREATE TABLE "api_keys" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "user_id" uuid NOT NULL, "name" character varying(100) NOT NULL, "key_hash" character(64) NOT NULL, "key_prefix" character varying(12) NOT NULL, "act_for_others" boolean NOT NULL DEFAULT false, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "revoked_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "UQ_57384430aa1959f4578046c9b81" UNIQUE ("key_hash"), CONSTRAINT "PK_5c8a79801b44bd27b79228e1dad" PRIMARY KEY ("id"))`);
    await q.query(`CREATE TABLE "event_streams" ("id" uuid NOT NULL, "kind" character varying(32) NOT NULL, "owner_id" uuid, "last_seq" integer NOT NULL DEFAULT '0', "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_58a9c777323c51e32bfad87b30d" PRIMARY KEY ("id"))`);
    await q.query(`CREATE TABLE "job_events" ("stream_id" uuid NOT NULL, "seq" integer NOT NULL, "type" character varying(64) NOT NULL, "data" jsonb NOT NULL DEFAULT '{}', "terminal" boolean NOT NULL DEFAULT false, "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), CONSTRAINT "PK_5c019f8f77e84416038fc38b80b" PRIMARY KEY ("stream_id", "seq"))`);
    await q.query(`CREATE TYPE "public"."system_check_status" AS ENUM('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED')`);
    await q.query(`CREATE TABLE "system_checks" ("id" uuid NOT NULL DEFAULT gen_random_uuid(), "requested_by" uuid NOT NULL, "status" "public"."system_check_status" NOT NULL DEFAULT 'QUEUED', "probes" jsonb NOT NULL DEFAULT '[]', "worker_id" character varying(128), "created_at" TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(), "finished_at" TIMESTAMP WITH TIME ZONE, CONSTRAINT "PK_9055d2b4c47bcacdc46a255626c" PRIMARY KEY ("id"))`);
    await q.query(`CREATE TABLE "system_settings" ("key" character varying(64) NOT NULL, "value" text NOT NULL, CONSTRAINT "PK_b1b5bc664526d375c94ce9ad43d" PRIMARY KEY ("key"))`);
    await q.query(`CREATE TABLE "user_roles" ("user_id" uuid NOT NULL, "role_id" uuid NOT NULL, CONSTRAINT "PK_23ed6f04fe43066df08379fd034" PRIMARY KEY ("user_id", "role_id"))`);
    await q.query(`CREATE INDEX "IDX_87b8888186ca9769c960e92687" ON "user_roles"  ("user_id")`);
    await q.query(`CREATE INDEX "IDX_b23c65e50a758245a33ee35fda" ON "user_roles"  ("role_id")`);
    await q.query(`ALTER TABLE "api_keys" ADD CONSTRAINT "FK_a3baee01d8408cd3c0f89a9a973" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE NO ACTION`);
    await q.query(`ALTER TABLE "job_events" ADD CONSTRAINT "FK_d0a288c3c4cefef614db905a5da" FOREIGN KEY ("stream_id") REFERENCES "event_streams"("id") ON DELETE CASCADE ON UPDATE NO ACTION`);
    await q.query(`ALTER TABLE "user_roles" ADD CONSTRAINT "FK_87b8888186ca9769c960e926870" FOREIGN KEY ("user_id") REFERENCES "users"("id") ON DELETE CASCADE ON UPDATE CASCADE`);
    await q.query(`ALTER TABLE "user_roles" ADD CONSTRAINT "FK_b23c65e50a758245a33ee35fda1" FOREIGN KEY ("role_id") REFERENCES "roles"("id") ON DELETE CASCADE ON UPDATE CASCADE`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "user_roles" DROP CONSTRAINT "FK_b23c65e50a758245a33ee35fda1"`);
    await q.query(`ALTER TABLE "user_roles" DROP CONSTRAINT "FK_87b8888186ca9769c960e926870"`);
    await q.query(`ALTER TABLE "job_events" DROP CONSTRAINT "FK_d0a288c3c4cefef614db905a5da"`);
    await q.query(`ALTER TABLE "api_keys" DROP CONSTRAINT "FK_a3baee01d8408cd3c0f89a9a973"`);
    await q.query(`DROP INDEX "public"."IDX_b23c65e50a758245a33ee35fda"`);
    await q.query(`DROP INDEX "public"."IDX_87b8888186ca9769c960e92687"`);
    await q.query(`DROP TABLE "user_roles"`);
    await q.query(`DROP TABLE "system_settings"`);
    await q.query(`DROP TABLE "system_checks"`);
    await q.query(`DROP TYPE "public"."system_check_status"`);
    await q.query(`DROP TABLE "job_events"`);
    await q.query(`DROP TABLE "event_streams"`);
    await q.query(`DROP TABLE "api_keys"`);
    await q.query(`DROP TABLE "users"`);
    await q.query(`DROP TABLE "roles"`);
  }
}
