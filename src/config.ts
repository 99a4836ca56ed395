import path from "node:path";
import { z } from "zod";

/**
 * The one place that reads process.env. Everything else receives a Config.
 *
 * Unset dependency URLs (DATABASE_URL, REDIS_URL, S3_BUCKET/S3_ENDPOINT, SAGEMAKER_ENDPOINT) mean
 * "use the embedded default" (see src/local/).
 */

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
const ROLES = ["all", "api", "worker"] as const;

const emptyToUndefined = (v: unknown) => (typeof v === "string" && v.trim() === "" ? undefined : v);

const optionalString = z.preprocess(emptyToUndefined, z.string().optional());
const intIn = (min: number, max: number, dflt: number) =>
  z.preprocess(
    emptyToUndefined,
    z.coerce
      .number({ error: "must be a whole number" })
      .int({ error: "must be a whole number" })
      .min(min, { error: `must be at least ${min}` })
      .max(max, { error: `must be at most ${max}` })
      .default(dflt),
  );
const bool = (dflt: boolean) =>
  z.preprocess(
    emptyToUndefined,
    z
      .enum(["true", "false", "1", "0", "yes", "no"], { error: "must be true or false" })
      .transform((v) => v === "true" || v === "1" || v === "yes")
      .default(dflt),
  );
const urlWithProtocols = (protocols: string[]) =>
  z.preprocess(
    emptyToUndefined,
    z
      .string()
      .refine(
        (v) => {
          try {
            return protocols.includes(new URL(v).protocol);
          } catch {
            return false;
          }
        },
        { error: `must be a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}` },
      )
      .optional(),
  );

/** `<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<namespace>/<repository>:<tag>` (upstream's check). */
export const ECR_IMAGE = /^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\/[a-z0-9._\/-]+:[A-Za-z0-9_.-]{1,128}$/;

const envSchema = z.object({
  PORT: intIn(0, 65535, 8080),
  HOST: z.preprocess(emptyToUndefined, z.string().min(1).default("127.0.0.1")),
  ROLE: z.preprocess(emptyToUndefined, z.enum(ROLES, { error: `must be one of ${ROLES.join(", ")}` }).default("all")),
  DATA_DIR: z.preprocess(emptyToUndefined, z.string().min(1).default("./data")),
  DATABASE_URL: urlWithProtocols(["postgres:", "postgresql:"]),
  REDIS_URL: urlWithProtocols(["redis:", "rediss:"]),
  S3_BUCKET: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { error: "must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)" })
      .optional(),
  ),
  S3_ENDPOINT: urlWithProtocols(["http:", "https:"]),
  S3_FORCE_PATH_STYLE: bool(true),
  S3_ACCESS_KEY_ID: optionalString,
  S3_SECRET_ACCESS_KEY: optionalString,
  AWS_REGION: z.preprocess(
    emptyToUndefined,
    z.string().regex(/^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$/, { error: "must be an AWS region such as us-east-1" }).default("us-east-1"),
  ),
  SAGEMAKER_ENDPOINT: urlWithProtocols(["http:", "https:"]),
  API_KEY: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .regex(/^[A-Za-z0-9_-]{20,128}$/, { error: "must be 20 to 128 characters of letters, digits, '_' or '-'" })
      .optional(),
  ),
  ADMIN_USERNAME: z.preprocess(
    emptyToUndefined,
    z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/, { error: "must be 1-64 letters, digits, '_', '.', '@' or '-'" }).default("admin"),
  ),
  SESSION_SECRET: z.preprocess(emptyToUndefined, z.string().min(32, { error: "must be at least 32 characters" }).optional()),
  SESSION_TTL_SECONDS: intIn(60, 30 * 24 * 3600, 12 * 3600),
  REST_PREFIX: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .regex(/^\/[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/, { error: "must look like /prod (a leading slash, no trailing slash)" })
      .optional(),
  ),
  CORS_ORIGINS: z.preprocess(emptyToUndefined, z.string().default("*")),
  BODY_LIMIT_BYTES: intIn(1024, 256 * 1024 * 1024, 32 * 1024 * 1024),
  LOG_LEVEL: z.preprocess(emptyToUndefined, z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(", ")}` }).default("info")),
  WORKER_CONCURRENCY: intIn(1, 1000, 8),
  WEBUI_WORKER_CONCURRENCY: intIn(1, 1000, 32),
  WS_MAX_SUBSCRIPTIONS: intIn(1, 10_000, 100),
  QUEUE_PREFIX: z.preprocess(emptyToUndefined, z.string().regex(/^[A-Za-z0-9_:-]{1,64}$/, { error: "must be 1-64 of A-Z a-z 0-9 _ : -" }).default("diffgate")),
  SHUTDOWN_TIMEOUT_MS: intIn(100, 120_000, 9_000),
  GRAPHIQL: bool(true),
  JOB_LOCK_MS: intIn(1000, 600_000, 30_000),
  SAGEMAKER_EXECUTION_ROLE_ARN: z.preprocess(
    emptyToUndefined,
    z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/?[a-zA-Z_0-9+=,.@\-_/]+$/, { error: "must be an IAM role ARN" }).optional(),
  ),
  INFERENCE_IMAGE_URI: z.preprocess(emptyToUndefined, z.string().regex(ECR_IMAGE, { error: "must be an ECR image URI: <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>:<tag>" }).optional()),
  MODEL_DATA_URL: z.preprocess(emptyToUndefined, z.string().regex(/^s3:\/\/[^/]+\/.+/, { error: "must be an s3:// URL" }).optional()),
  SNS_SUCCESS_TOPIC_ARN: z.preprocess(emptyToUndefined, z.string().regex(/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$/, { error: "must be an SNS topic ARN" }).optional()),
  SNS_ERROR_TOPIC_ARN: z.preprocess(emptyToUndefined, z.string().regex(/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]+$/, { error: "must be an SNS topic ARN" }).optional()),
  ENDPOINT_MAX_CONCURRENT_INVOCATIONS: intIn(1, 100, 1),
  PUBLIC_URL: z.preprocess(emptyToUndefined, z.url({ error: "must be an http(s) URL" }).optional()),
  INFERENCE_INVOCATION_TIMEOUT_SECONDS: intIn(1, 3600, 3600),
  INFERENCE_REQUEST_TTL_SECONDS: intIn(60, 21600, 21600),
  INFERENCE_OUTPUT_TIMEOUT_MS: intIn(1000, 7 * 24 * 3600_000, 2 * 3600_000),
  INFERENCE_WATCH_INITIAL_MS: intIn(10, 60_000, 500),
  INFERENCE_PROGRESS_PREVIEW_EVERY: intIn(0, 1000, 5),
  DISPATCH_RECHECK_MS: intIn(100, 600_000, 2_000),
  INFERENCE_WATCH_BUSY_MS: intIn(10, 60_000, 100),
  ENDPOINT_QUEUE_AHEAD: intIn(0, 100, 1),
  WEBUI_HEALTH_INTERVAL_MS: intIn(1000, 24 * 3600_000, 15_000),
  WEBUI_HEALTH_TIMEOUT_MS: intIn(100, 120_000, 5_000),
  WEBUI_PROGRESS_INTERVAL_MS: intIn(50, 60_000, 500),
  WEBUI_JOB_TIMEOUT_MS: intIn(1000, 24 * 3600_000, 30 * 60_000),
  WEBUI_RETRY_ON_SERVER_FAILURE: bool(false),
  CREDENTIALS_KEY: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .refine((k) => Buffer.from(k, "base64").length === 32, { error: "must be 32 bytes, base64-encoded (openssl rand -base64 32)" })
      .optional(),
  ),
  ENDPOINT_DEPLOY_TIMEOUT_MS: intIn(10_000, 6 * 3600_000, 3600_000),
  RECONCILE_INTERVAL_MS: intIn(1000, 24 * 3600_000, 60_000),
  EMULATOR_ENDPOINT_CREATE_MS: intIn(0, 3600_000, 5000),
  EMULATOR_ENDPOINT_UPDATE_MS: intIn(0, 3600_000, 3000),
  EMULATOR_ENDPOINT_DELETE_MS: intIn(0, 3600_000, 2000),
  EMULATOR_FAIL_INSTANCE_TYPES: z.preprocess(emptyToUndefined, z.string().default("")),
  EMULATOR_INVOCATION_START_MS: intIn(0, 600_000, 200),
  EMULATOR_INVOCATION_STEP_MS: intIn(0, 60_000, 50),
  EMULATOR_TRAINING_STARTING_MS: intIn(0, 3600_000, 6000),
  EMULATOR_TRAINING_DOWNLOADING_MS: intIn(0, 3600_000, 3000),
  EMULATOR_TRAINING_TRAINING_MS: intIn(0, 24 * 3600_000, 30_000),
  EMULATOR_TRAINING_UPLOADING_MS: intIn(0, 3600_000, 3000),
  EMULATOR_TRAINING_STOPPING_MS: intIn(0, 3600_000, 2000),
  EMULATOR_TRAINING_FAIL_MATCHING: z.preprocess(emptyToUndefined, z.string().default("")),
  UPLOAD_URL_TTL_SECONDS: intIn(60, 7 * 24 * 3600, 7 * 24 * 3600),
  DOWNLOAD_URL_TTL_SECONDS: intIn(60, 7 * 24 * 3600, 3600),
  UNFINISHED_UPLOAD_MAX_AGE_HOURS: intIn(1, 24 * 365, 7 * 24),
  HOUSEKEEPING_INTERVAL_MS: intIn(1000, 24 * 3600_000, 3600_000),
  IMPORT_MAX_BYTES: intIn(1, Number.MAX_SAFE_INTEGER, 32 * 1024 ** 3),
  IMPORT_PART_SIZE_MB: intIn(5, 512, 16),
  IMPORT_CONCURRENCY: intIn(1, 16, 4),
  IMPORT_ALLOW_PRIVATE_HOSTS: z.preprocess(emptyToUndefined, z.string().default("")),
  DATASET_MAX_FILES: intIn(1, 10_000, 1000),
  MODEL_UTILITY_ENDPOINT: z.preprocess(emptyToUndefined, z.string().regex(/^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/, { error: "must be a SageMaker endpoint name" }).optional()),
  MODEL_TASK_TIMEOUT_MS: intIn(1000, 7 * 24 * 3600_000, 2 * 3600_000),
  MODEL_WATCH_INITIAL_MS: intIn(10, 60_000, 1000),
  TRAINING_IMAGE_URI: z.preprocess(emptyToUndefined, z.string().regex(ECR_IMAGE, { error: "must be an ECR image URI: <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>:<tag>" }).optional()),
  TRAINING_ROLE_ARN: z.preprocess(emptyToUndefined, z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/?[a-zA-Z_0-9+=,.@\-_/]+$/, { error: "must be an IAM role ARN" }).optional()),
  TRAINING_INSTANCE_TYPES: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .regex(/^ml\.[a-z0-9]+\.[a-z0-9]+(\s*,\s*ml\.[a-z0-9]+\.[a-z0-9]+)*$/, { error: "must be a comma-separated list of instance types such as ml.g5.2xlarge" })
      .default("ml.g4dn.xlarge,ml.g4dn.2xlarge,ml.g5.xlarge,ml.g5.2xlarge"),
  ),
  TRAINING_MAX_RUNTIME_SECONDS: intIn(60, 2_419_200, 24 * 3600),
  TRAINING_MAX_WAIT_SECONDS: intIn(60, 2_419_200, 48 * 3600),
  TRAINING_VOLUME_SIZE_GB: intIn(1, 16_384, 125),
  TRAINING_WATCH_INITIAL_MS: intIn(10, 600_000, 2000),
});

export type Role = (typeof ROLES)[number];
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  port: number;
  host: string;
  role: Role;
  dataDir: string;
  databaseUrl: string | undefined;
  redisUrl: string | undefined;
  s3: {
    bucket: string;
    endpoint: string | undefined;
    forcePathStyle: boolean;
    embedded: boolean;
    /** Credentials of the object store alone (an S3-compatible store's keys); else the AWS chain. */
    credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
  };
  awsRegion: string;
  sagemakerEndpoint: string | undefined;
  apiKey: string | undefined;
  adminUsername: string;
  sessionSecret: string | undefined;
  sessionTtlSeconds: number;
  restPrefix: string | undefined;
  corsOrigins: "*" | string[];
  bodyLimitBytes: number;
  /** Subscriptions one graphql-ws connection may hold at once. */
  wsMaxSubscriptions: number;
  logLevel: LogLevel;
  workerConcurrency: number;
  /** WebUI runs one worker process drives at once (each holds its slot while its server generates). */
  webUiWorkerConcurrency: number;
  queuePrefix: string;
  shutdownTimeoutMs: number;
  graphiql: boolean;
  /** BullMQ lock duration and stalled-job check interval: how soon a dead worker's job is taken over. */
  jobLockMs: number;
  sagemaker: {
    executionRoleArn: string | undefined;
    inferenceImage: string | undefined;
    modelDataUrl: string | undefined;
    successTopicArn: string | undefined;
    errorTopicArn: string | undefined;
    maxConcurrentInvocationsPerInstance: number;
    deployTimeoutMs: number;
    reconcileIntervalMs: number;
  };
  inferences: {
    /** Base URL the endpoints reach Diffgate at (progress callbacks); `http://<HOST>:<PORT>` by default. */
    publicUrl: string;
    /** PUBLIC_URL was set; otherwise the listening process sets publicUrl to where it listens (PORT may be 0). */
    publicUrlConfigured: boolean;
    invocationTimeoutSeconds: number;
    requestTtlSeconds: number;
    outputTimeoutMs: number;
    watchInitialMs: number;
    previewEvery: number;
    /** How often a job waiting for its endpoint's capacity looks again when nothing wakes it sooner. */
    dispatchRecheckMs: number;
    /** Jobs per SageMaker instance handed over beyond its concurrency, waiting in SageMaker's own queue. */
    queueAheadPerInstance: number;
    /** The output watch's pace while jobs wait behind the watched one (their slot frees when it is seen). */
    watchBusyMs: number;
  };
  webui: {
    healthIntervalMs: number;
    healthTimeoutMs: number;
    progressIntervalMs: number;
    jobTimeoutMs: number;
    /** Send a job again, once, to a server that died under it (when it answers again). */
    retryOnServerFailure: boolean;
  };
  /** Key that seals endpoint credentials at rest; derived from the session secret when unset. */
  credentialsKey: string | undefined;
  emulator: {
    endpointCreateMs: number;
    endpointUpdateMs: number;
    endpointDeleteMs: number;
    failInstanceTypes: string[];
    invocationStartMs: number;
    invocationStepMs: number;
    trainingStartingMs: number;
    trainingDownloadingMs: number;
    trainingTrainingMs: number;
    trainingUploadingMs: number;
    trainingStoppingMs: number;
    failTrainingJobsMatching: string[];
  };
  checkpoints: {
    uploadUrlTtlSeconds: number;
    downloadUrlTtlSeconds: number;
    unfinishedUploadMaxAgeMs: number;
    housekeepingIntervalMs: number;
    importMaxBytes: number;
    importPartSizeBytes: number;
    importConcurrency: number;
    /** Hosts (or host:port) an import may reach on loopback or private addresses: an explicit allow-list. */
    importAllowPrivateHosts: string[];
  };
  datasets: {
    /** Most files one dataset may be created with. */
    maxFiles: number;
  };
  models: {
    /** The async endpoint (a Diffgate endpoint) that creates models and merges checkpoints. */
    utilityEndpoint: string | undefined;
    taskTimeoutMs: number;
    watchInitialMs: number;
  };
  trainings: {
    image: string | undefined;
    roleArn: string | undefined;
    instanceTypes: string[];
    maxRuntimeSeconds: number;
    maxWaitSeconds: number;
    volumeSizeGb: number;
    watchInitialMs: number;
  };
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? "?");
      const raw = env[key];
      const secret = ["API_KEY", "SESSION_SECRET", "S3_SECRET_ACCESS_KEY", "CREDENTIALS_KEY"].includes(key) || key.endsWith("_URL");
      const shown = secret ? "" : raw === undefined ? "" : ` (got ${JSON.stringify(raw)})`;
      return `${key}: ${issue.message}${shown}`;
    });
    throw new ConfigError(problems);
  }
  const e = parsed.data;
  const problems: string[] = [];
  const corsOrigins = e.CORS_ORIGINS.trim() === "*" ? ("*" as const) : e.CORS_ORIGINS.split(",").map((o) => o.trim()).filter(Boolean);
  if (corsOrigins !== "*") {
    for (const origin of corsOrigins) {
      try {
        const u = new URL(origin);
        if (u.origin !== origin) problems.push(`CORS_ORIGINS: ${JSON.stringify(origin)} must be a bare origin such as https://app.example.com`);
      } catch {
        problems.push(`CORS_ORIGINS: ${JSON.stringify(origin)} is not an origin`);
      }
    }
  }
  if (e.S3_ENDPOINT && !e.S3_BUCKET) problems.push("S3_BUCKET: must be set when S3_ENDPOINT is set");
  if (!!e.S3_ACCESS_KEY_ID !== !!e.S3_SECRET_ACCESS_KEY) problems.push("S3_ACCESS_KEY_ID: set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither");
  if (e.TRAINING_MAX_WAIT_SECONDS < e.TRAINING_MAX_RUNTIME_SECONDS) problems.push("TRAINING_MAX_WAIT_SECONDS: must be at least TRAINING_MAX_RUNTIME_SECONDS (SageMaker's rule for managed spot training)");
  if (problems.length) throw new ConfigError(problems);

  return {
    port: e.PORT,
    host: e.HOST,
    role: e.ROLE,
    dataDir: path.resolve(e.DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    redisUrl: e.REDIS_URL,
    s3: {
      bucket: e.S3_BUCKET ?? "diffgate",
      endpoint: e.S3_ENDPOINT,
      forcePathStyle: e.S3_FORCE_PATH_STYLE,
      embedded: !e.S3_BUCKET,
      credentials: e.S3_ACCESS_KEY_ID && e.S3_SECRET_ACCESS_KEY ? { accessKeyId: e.S3_ACCESS_KEY_ID, secretAccessKey: e.S3_SECRET_ACCESS_KEY } : undefined,
    },
    awsRegion: e.AWS_REGION,
    sagemakerEndpoint: e.SAGEMAKER_ENDPOINT,
    apiKey: e.API_KEY,
    adminUsername: e.ADMIN_USERNAME,
    sessionSecret: e.SESSION_SECRET,
    sessionTtlSeconds: e.SESSION_TTL_SECONDS,
    restPrefix: e.REST_PREFIX,
    corsOrigins,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    wsMaxSubscriptions: e.WS_MAX_SUBSCRIPTIONS,
    logLevel: e.LOG_LEVEL,
    workerConcurrency: e.WORKER_CONCURRENCY,
    webUiWorkerConcurrency: e.WEBUI_WORKER_CONCURRENCY,
    queuePrefix: e.QUEUE_PREFIX,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    graphiql: e.GRAPHIQL,
    jobLockMs: e.JOB_LOCK_MS,
    sagemaker: {
      executionRoleArn: e.SAGEMAKER_EXECUTION_ROLE_ARN,
      inferenceImage: e.INFERENCE_IMAGE_URI,
      modelDataUrl: e.MODEL_DATA_URL,
      successTopicArn: e.SNS_SUCCESS_TOPIC_ARN,
      errorTopicArn: e.SNS_ERROR_TOPIC_ARN,
      maxConcurrentInvocationsPerInstance: e.ENDPOINT_MAX_CONCURRENT_INVOCATIONS,
      deployTimeoutMs: e.ENDPOINT_DEPLOY_TIMEOUT_MS,
      reconcileIntervalMs: e.RECONCILE_INTERVAL_MS,
    },
    inferences: {
      publicUrl: (e.PUBLIC_URL ?? `http://${e.HOST}:${e.PORT}`).replace(/\/+$/, ""),
      publicUrlConfigured: e.PUBLIC_URL !== undefined,
      invocationTimeoutSeconds: e.INFERENCE_INVOCATION_TIMEOUT_SECONDS,
      requestTtlSeconds: e.INFERENCE_REQUEST_TTL_SECONDS,
      outputTimeoutMs: e.INFERENCE_OUTPUT_TIMEOUT_MS,
      watchInitialMs: e.INFERENCE_WATCH_INITIAL_MS,
      previewEvery: e.INFERENCE_PROGRESS_PREVIEW_EVERY,
      dispatchRecheckMs: e.DISPATCH_RECHECK_MS,
      queueAheadPerInstance: e.ENDPOINT_QUEUE_AHEAD,
      watchBusyMs: e.INFERENCE_WATCH_BUSY_MS,
    },
    webui: {
      healthIntervalMs: e.WEBUI_HEALTH_INTERVAL_MS,
      healthTimeoutMs: e.WEBUI_HEALTH_TIMEOUT_MS,
      progressIntervalMs: e.WEBUI_PROGRESS_INTERVAL_MS,
      jobTimeoutMs: e.WEBUI_JOB_TIMEOUT_MS,
      retryOnServerFailure: e.WEBUI_RETRY_ON_SERVER_FAILURE,
    },
    credentialsKey: e.CREDENTIALS_KEY,
    emulator: {
      endpointCreateMs: e.EMULATOR_ENDPOINT_CREATE_MS,
      endpointUpdateMs: e.EMULATOR_ENDPOINT_UPDATE_MS,
      endpointDeleteMs: e.EMULATOR_ENDPOINT_DELETE_MS,
      failInstanceTypes: e.EMULATOR_FAIL_INSTANCE_TYPES.split(",").map((t) => t.trim()).filter(Boolean),
      invocationStartMs: e.EMULATOR_INVOCATION_START_MS,
      invocationStepMs: e.EMULATOR_INVOCATION_STEP_MS,
      trainingStartingMs: e.EMULATOR_TRAINING_STARTING_MS,
      trainingDownloadingMs: e.EMULATOR_TRAINING_DOWNLOADING_MS,
      trainingTrainingMs: e.EMULATOR_TRAINING_TRAINING_MS,
      trainingUploadingMs: e.EMULATOR_TRAINING_UPLOADING_MS,
      trainingStoppingMs: e.EMULATOR_TRAINING_STOPPING_MS,
      failTrainingJobsMatching: e.EMULATOR_TRAINING_FAIL_MATCHING.split(",").map((t) => t.trim()).filter(Boolean),
    },
    checkpoints: {
      uploadUrlTtlSeconds: e.UPLOAD_URL_TTL_SECONDS,
      downloadUrlTtlSeconds: e.DOWNLOAD_URL_TTL_SECONDS,
      unfinishedUploadMaxAgeMs: e.UNFINISHED_UPLOAD_MAX_AGE_HOURS * 3600_000,
      housekeepingIntervalMs: e.HOUSEKEEPING_INTERVAL_MS,
      importMaxBytes: e.IMPORT_MAX_BYTES,
      importPartSizeBytes: e.IMPORT_PART_SIZE_MB * 1024 * 1024,
      importConcurrency: e.IMPORT_CONCURRENCY,
      importAllowPrivateHosts: e.IMPORT_ALLOW_PRIVATE_HOSTS.split(",").map((h) => h.trim().toLowerCase()).filter(Boolean),
    },
    datasets: {
      maxFiles: e.DATASET_MAX_FILES,
    },
    models: {
      utilityEndpoint: e.MODEL_UTILITY_ENDPOINT,
      taskTimeoutMs: e.MODEL_TASK_TIMEOUT_MS,
      watchInitialMs: e.MODEL_WATCH_INITIAL_MS,
    },
    trainings: {
      image: e.TRAINING_IMAGE_URI,
      roleArn: e.TRAINING_ROLE_ARN ?? e.SAGEMAKER_EXECUTION_ROLE_ARN,
      instanceTypes: [...new Set(e.TRAINING_INSTANCE_TYPES.split(",").map((t) => t.trim()).filter(Boolean))],
      maxRuntimeSeconds: e.TRAINING_MAX_RUNTIME_SECONDS,
      maxWaitSeconds: e.TRAINING_MAX_WAIT_SECONDS,
      volumeSizeGb: e.TRAINING_VOLUME_SIZE_GB,
      watchInitialMs: e.TRAINING_WATCH_INITIAL_MS,
    },
  };
}

/**
 * The AWS SDK picks endpoint overrides up from the environment (AWS_ENDPOINT_URL_*), so that product
 * code builds its clients the same way for real AWS and for the embedded emulator. This is the one
 * sanctioned writer of those variables.
 */
export function exportSdkEndpointOverrides(overrides: { sagemaker: string; credentials?: { accessKeyId: string; secretAccessKey: string } }): void {
  process.env.AWS_ENDPOINT_URL_SAGEMAKER = overrides.sagemaker;
  process.env.AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME = overrides.sagemaker;
  process.env.AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING = overrides.sagemaker;
  process.env.AWS_ENDPOINT_URL_CLOUDWATCH = overrides.sagemaker;
  if (overrides.credentials && !process.env.AWS_ACCESS_KEY_ID) {
    process.env.AWS_ACCESS_KEY_ID = overrides.credentials.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = overrides.credentials.secretAccessKey;
  }
}
