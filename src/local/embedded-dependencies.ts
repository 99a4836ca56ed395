import path from "node:path";
import type { Logger } from "pino";
import { exportSdkEndpointOverrides, type Config } from "../config.js";
import type { ResolvedDependencies } from "../runtime.js";
import { startEmbeddedPostgres } from "./embedded-postgres.js";
import { startEmbeddedRedis } from "./embedded-redis.js";
import { startEmbeddedS3, type RunningS3 } from "./embedded-s3.js";
import { startSageMakerEmulator } from "./sagemaker-emulator.js";

/** What the emulator accepts where a real account needs configuration. */
export const EMULATOR_SAGEMAKER_DEFAULTS = (region: string) => ({
  executionRoleArn: "arn:aws:iam::000000000000:role/DiffgateSageMakerExecution",
  inferenceImage: `000000000000.dkr.ecr.${region}.amazonaws.com/stable-diffusion-aws-extension/aigc-webui-inference:latest`,
  trainingImage: `000000000000.dkr.ecr.${region}.amazonaws.com/stable-diffusion-aws-extension/aigc-webui-dreambooth-training:latest`,
});

export interface StartedDependencies {
  deps: ResolvedDependencies;
  /** Human-readable lines about what was started, for the start banner. */
  notes: string[];
  stop(): Promise<void>;
}

/**
 * Starts the embedded default of every dependency that is not configured (DESIGN.md's table), and
 * resolves the configured ones. `envPath` is PATH, used to look for redis-server.
 */
export async function startDependencies(config: Config, envPath: string | undefined, log: Logger): Promise<StartedDependencies> {
  const stops: Array<() => Promise<void>> = [];
  const notes: string[] = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => log.warn({ err }, "stopping an embedded dependency failed"));
  };
  try {
    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      const pg = await startEmbeddedPostgres(config.dataDir, log);
      stops.push(pg.stop);
      databaseUrl = pg.url;
      notes.push(`database: embedded Postgres in ${config.dataDir}/postgres`);
    }

    let redisUrl = config.redisUrl;
    if (!redisUrl) {
      const redis = await startEmbeddedRedis(config.dataDir, envPath, log);
      stops.push(redis.stop);
      redisUrl = redis.url;
      notes.push(redis.owned ? `redis: redis-server from PATH, data in ${config.dataDir}/redis` : "redis: the one answering on 127.0.0.1:6379");
    }

    let objectStore: ResolvedDependencies["objectStore"];
    let s3: RunningS3 | undefined;
    if (config.s3.embedded) {
      s3 = await startEmbeddedS3(config.dataDir, config.s3.bucket);
      stops.push(s3.stop);
      objectStore = { bucket: config.s3.bucket, region: config.awsRegion, endpoint: s3.endpoint, forcePathStyle: true, credentials: s3.credentials };
      notes.push(`object store: s3rver at ${s3.endpoint}, bucket "${config.s3.bucket}", files in ${config.dataDir}/s3`);
    } else {
      objectStore = {
        bucket: config.s3.bucket,
        region: config.awsRegion,
        forcePathStyle: config.s3.forcePathStyle,
        ...(config.s3.endpoint ? { endpoint: config.s3.endpoint } : {}),
        ...(config.s3.credentials ? { credentials: config.s3.credentials } : {}),
      };
    }

    let sagemakerDefaults: ResolvedDependencies["sagemakerDefaults"];
    if (config.sagemakerEndpoint) {
      exportSdkEndpointOverrides({ sagemaker: config.sagemakerEndpoint });
      notes.push(`sagemaker: ${config.sagemakerEndpoint}`);
    } else if (config.s3.embedded) {
      // Nothing real configured: point the SDK at the built-in emulator.
      const emulator = await startSageMakerEmulator({
        settings: {
          ...config.emulator,
          region: config.awsRegion,
          stateFile: path.join(config.dataDir, "sagemaker", "state.json"),
          // Invocations read their input from and write their output to the embedded store.
          ...(s3 ? { s3: { endpoint: s3.endpoint, region: config.awsRegion, credentials: s3.credentials, forcePathStyle: true } } : {}),
        },
      });
      sagemakerDefaults = EMULATOR_SAGEMAKER_DEFAULTS(config.awsRegion);
      stops.push(emulator.stop);
      exportSdkEndpointOverrides({ sagemaker: emulator.url, credentials: { accessKeyId: "emulator", secretAccessKey: "emulator" } });
      notes.push(`sagemaker: the built-in emulator at ${emulator.url} (test cards, not real generation)`);
    } else {
      notes.push("sagemaker: AWS (credentials from the default chain)");
    }

    return { deps: { databaseUrl, redisUrl, objectStore, ensureBucket: config.s3.embedded, ...(sagemakerDefaults ? { sagemakerDefaults } : {}) }, notes, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
