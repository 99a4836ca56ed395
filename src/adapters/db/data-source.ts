import "reflect-metadata";
import { DataSource } from "typeorm";
import { ApiKeyEntity } from "./entities/api-key.entity.js";
import { CheckpointEntity, CheckpointFileEntity } from "./entities/checkpoint.entity.js";
import { DatasetEntity, DatasetItemEntity } from "./entities/dataset.entity.js";
import { EndpointEntity } from "./entities/endpoint.entity.js";
import { InferenceEntity } from "./entities/inference.entity.js";
import { MergeEntity, ModelEntity, TrainingEntity } from "./entities/training.entity.js";
import { EventStreamEntity, JobEventEntity } from "./entities/event.entity.js";
import { RoleEntity } from "./entities/role.entity.js";
import { SystemCheckEntity } from "./entities/system-check.entity.js";
import { SystemSettingEntity } from "./entities/system-setting.entity.js";
import { UserEntity } from "./entities/user.entity.js";
import { Foundation1764230400000 } from "./migrations/1764230400000-foundation.js";
import { EndpointDeployments1795762597887 } from "./migrations/1795762597887-endpoint-deployments.js";
import { Checkpoints1795763295929 } from "./migrations/1795763295929-checkpoints.js";
import { Datasets1795766214750 } from "./migrations/1795766214750-datasets.js";
import { Inferences1795767595712 } from "./migrations/1795767595712-inferences.js";
import { WebUiEndpoints1795770766707 } from "./migrations/1795770766707-web-ui-endpoints.js";
import { Trainings1795770790811 } from "./migrations/1795770790811-trainings.js";
import { TrainingCreateAttempt1795773741132 } from "./migrations/1795773741132-training-create-attempt.js";

export const ENTITIES = [UserEntity, RoleEntity, ApiKeyEntity, SystemSettingEntity, EventStreamEntity, JobEventEntity, SystemCheckEntity, EndpointEntity, CheckpointEntity, CheckpointFileEntity, DatasetEntity, DatasetItemEntity, InferenceEntity, ModelEntity, TrainingEntity, MergeEntity];
export const MIGRATIONS = [Foundation1764230400000, EndpointDeployments1795762597887, Checkpoints1795763295929, Datasets1795766214750, Inferences1795767595712, WebUiEndpoints1795770766707, Trainings1795770790811, TrainingCreateAttempt1795773741132];

/** Advisory-lock key for schema migrations and first-start bootstrap ("diffgate" as an int64). */
const MIGRATION_LOCK_KEY = "7235843316543545716";

export function createDataSource(databaseUrl: string, options: { poolSize?: number; applicationName?: string } = {}): DataSource {
  return new DataSource({
    type: "postgres",
    url: databaseUrl,
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsTableName: "schema_migrations",
    synchronize: false,
    migrationsRun: false,
    uuidExtension: "pgcrypto",
    installExtensions: false,
    logging: false,
    poolSize: options.poolSize ?? 10,
    applicationName: options.applicationName ?? "diffgate",
  });
}

/**
 * Runs pending migrations, then `afterMigrations` (first-start bootstrap), while holding a session
 * advisory lock, so that processes starting together apply each migration once and never race.
 */
export async function migrateUnderLock(dataSource: DataSource, afterMigrations?: () => Promise<void>): Promise<string[]> {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    await runner.query(`SELECT pg_advisory_lock(${MIGRATION_LOCK_KEY})`);
    try {
      const applied = await dataSource.runMigrations({ transaction: "each" });
      if (afterMigrations) await afterMigrations();
      return applied.map((m) => m.name);
    } finally {
      await runner.query(`SELECT pg_advisory_unlock(${MIGRATION_LOCK_KEY})`);
    }
  } finally {
    await runner.release();
  }
}
