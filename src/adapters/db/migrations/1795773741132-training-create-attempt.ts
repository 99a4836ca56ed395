import type { MigrationInterface, QueryRunner } from "typeorm";

export class TrainingCreateAttempt1795773741132 implements MigrationInterface {
  name = "TrainingCreateAttempt1795773741132";

  async up(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "trainings" ADD "create_attempted_at" TIMESTAMP WITH TIME ZONE`);
  }

  async down(q: QueryRunner): Promise<void> {
    await q.query(`ALTER TABLE "trainings" DROP COLUMN "create_attempted_at"`);
  }
}
