import os from "node:os";
import type { Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { DataSource } from "typeorm";
import { JobQueue } from "../queues/job-queue.js";
import { startJobWorker } from "../queues/job-worker.js";
import { WEBUI_QUEUE, WORK_QUEUE } from "../queues/job-types.js";
import { buildProcessors } from "../queues/processors/index.js";
import type { Config } from "./config.js";
import { createDataSource, migrateUnderLock } from "./adapters/db/data-source.js";
import { RedisEventBus } from "./adapters/events/event-bus.js";
import { closeRedis, createRedisConnection } from "./adapters/redis-connection.js";
import { SageMakerClients } from "./adapters/sagemaker/sagemaker-clients.js";
import { ObjectStore, type ObjectStoreSettings } from "./adapters/storage/object-store.js";
import { Metrics } from "./observability/metrics.js";
import { AccessService } from "./services/access-service.js";
import { CheckpointService } from "./services/checkpoint-service.js";
import { DatasetService } from "./services/dataset-service.js";
import { EndpointService } from "./services/endpoint-service.js";
import { InferenceService } from "./services/inference-service.js";
import { ModelService } from "./services/model-service.js";
import { ProducedCheckpoints } from "./services/produced-checkpoints.js";
import { TrainingService } from "./services/training-service.js";
import { Trainer } from "./adapters/sagemaker/trainer.js";
import { AsyncInvoker } from "./adapters/sagemaker/async-invoker.js";
import { SnsVerifier } from "./adapters/sns/sns-verifier.js";
import { CredentialSealer } from "./adapters/security/credential-sealer.js";
import { WebUiClient } from "./adapters/webui/webui-client.js";
import { WebUiJobRunner } from "./services/webui-job-runner.js";
import { MODEL_FILE_EXTENSIONS } from "./domain/checkpoints.js";
import type { DependencyProbe } from "./services/dependency-probes.js";
import { EventLog } from "./services/event-log.js";
import { JobEventService } from "./services/job-event-service.js";
import { SystemCheckService } from "./services/system-check-service.js";

/** Where the dependencies are, after the embedded defaults (if any) have started. */
export interface ResolvedDependencies {
  databaseUrl: string;
  redisUrl: string;
  objectStore: ObjectStoreSettings;
  /** Create the bucket when missing (embedded store only). */
  ensureBucket: boolean;
  /** Defaults that only the emulator can supply (a real account needs them configured). */
  sagemakerDefaults?: { executionRoleArn: string; inferenceImage: string; trainingImage: string };
}

export interface BootstrapOutcome {
  appliedMigrations: string[];
  adminCreated: boolean;
  generatedApiKey?: string;
}

/** Everything a process needs, wired once. Transports and workers take what they need from here. */
export class Runtime {
  readonly workerId = `${os.hostname()}:${process.pid}`;
  readonly db: DataSource;
  readonly redis: Redis;
  readonly subscriber: Redis;
  readonly bus: RedisEventBus;
  readonly events: EventLog;
  readonly storage: ObjectStore;
  readonly sagemaker: SageMakerClients;
  readonly queue: JobQueue;
  readonly metrics: Metrics;
  readonly access: AccessService;
  readonly systemChecks: SystemCheckService;
  readonly jobEvents: JobEventService;
  readonly endpoints: EndpointService;
  readonly checkpoints: CheckpointService;
  readonly datasets: DatasetService;
  readonly inferences: InferenceService;
  readonly models: ModelService;
  readonly trainings: TrainingService;
  /** Verifies SageMaker's SNS notifications (success and error topics). */
  readonly sns: SnsVerifier;
  /** What /readyz asks. */
  readonly readinessProbes: DependencyProbe[];
  private workers: Worker[] = [];

  constructor(
    readonly config: Config,
    readonly deps: ResolvedDependencies,
    readonly log: Logger,
  ) {
    this.db = createDataSource(deps.databaseUrl, { applicationName: `diffgate-${config.role}` });
    this.redis = createRedisConnection(deps.redisUrl, `diffgate-${config.role}`);
    this.subscriber = createRedisConnection(deps.redisUrl, `diffgate-${config.role}-events`);
    this.bus = new RedisEventBus(this.redis, this.subscriber, config.queuePrefix, log);
    this.events = new EventLog(this.db, this.bus, log);
    this.storage = new ObjectStore(deps.objectStore);
    this.sagemaker = new SageMakerClients(config.awsRegion);
    this.queue = new JobQueue(this.redis, config.queuePrefix);
    this.metrics = new Metrics({ queueDepth: () => this.queue.depth(), activeSubscriptions: () => this.bus.activeStreams });
    this.access = new AccessService(this.db, config.sessionTtlSeconds);
    this.jobEvents = new JobEventService(this.events);
    this.readinessProbes = [
      { name: "postgres", check: async () => void (await this.db.query("SELECT 1")) },
      { name: "redis", check: async () => void (await this.redis.ping()) },
      { name: "object-store", check: (signal) => this.storage.ping(signal) },
    ];
    const workerProbes: DependencyProbe[] = [...this.readinessProbes, { name: "sagemaker", check: (signal) => this.sagemaker.ping(signal) }];
    this.systemChecks = new SystemCheckService(this.db, this.events, this.queue, workerProbes, this.workerId);
    const sm = config.sagemaker;
    const webUiClient = new WebUiClient(config.webui.healthTimeoutMs);
    this.endpoints = new EndpointService(
      this.db,
      this.events,
      this.queue,
      this.sagemaker.provisioner,
      {
        bucket: deps.objectStore.bucket,
        executionRoleArn: sm.executionRoleArn ?? deps.sagemakerDefaults?.executionRoleArn,
        inferenceImage: sm.inferenceImage ?? deps.sagemakerDefaults?.inferenceImage,
        modelDataUrl: sm.modelDataUrl ?? `s3://${deps.objectStore.bucket}/data/model.tar.gz`,
        successTopicArn: sm.successTopicArn,
        errorTopicArn: sm.errorTopicArn,
        maxConcurrentInvocationsPerInstance: sm.maxConcurrentInvocationsPerInstance,
        deployTimeoutMs: sm.deployTimeoutMs,
        webUiHealthTimeoutMs: config.webui.healthTimeoutMs,
      },
      { client: webUiClient, sealer: () => this.credentialSealer() },
      log.child({ component: "endpoints" }),
    );
    const cp = config.checkpoints;
    this.checkpoints = new CheckpointService(
      this.db,
      this.events,
      this.queue,
      this.storage,
      {
        uploadUrlTtlSeconds: cp.uploadUrlTtlSeconds,
        downloadUrlTtlSeconds: cp.downloadUrlTtlSeconds,
        unfinishedUploadMaxAgeMs: cp.unfinishedUploadMaxAgeMs,
        importPartSizeBytes: cp.importPartSizeBytes,
        importConcurrency: cp.importConcurrency,
        download: {
          allowPrivateHosts: cp.importAllowPrivateHosts,
          maxBytes: cp.importMaxBytes,
          allowedExtensions: [...MODEL_FILE_EXTENSIONS],
          maxRedirects: 5,
          connectTimeoutMs: 10_000,
          idleTimeoutMs: 60_000,
        },
      },
      log.child({ component: "checkpoints" }),
    );
    this.datasets = new DatasetService(
      this.db,
      this.events,
      this.storage,
      { maxFiles: config.datasets.maxFiles, uploadUrlTtlSeconds: cp.uploadUrlTtlSeconds, previewUrlTtlSeconds: 24 * 3600 },
      log.child({ component: "datasets" }),
    );
    const inf = config.inferences;
    this.inferences = new InferenceService(
      this.db,
      this.events,
      this.queue,
      this.storage,
      new AsyncInvoker(this.sagemaker.runtime),
      {
        bucket: deps.objectStore.bucket,
        publicUrl: inf.publicUrl,
        paramsUploadUrlTtlSeconds: 3600,
        resultUrlTtlSeconds: 3600,
        invocationTimeoutSeconds: inf.invocationTimeoutSeconds,
        requestTtlSeconds: inf.requestTtlSeconds,
        outputTimeoutMs: inf.outputTimeoutMs,
        watchInitialMs: inf.watchInitialMs,
        previewEvery: inf.previewEvery,
        maxConcurrentInvocationsPerInstance: sm.maxConcurrentInvocationsPerInstance,
        maxDocumentBytes: 256 * 1024 * 1024,
        dispatchRecheckMs: inf.dispatchRecheckMs,
        queueAheadPerInstance: inf.queueAheadPerInstance,
        watchBusyMs: inf.watchBusyMs,
      },
      log.child({ component: "inferences" }),
    );
    this.inferences.useWebUiExecutor(
      new WebUiJobRunner(
        this.db,
        webUiClient,
        this.endpoints,
        this.inferences,
        this.storage,
        {
          progressIntervalMs: config.webui.progressIntervalMs,
          jobTimeoutMs: config.webui.jobTimeoutMs,
          retryOnServerFailure: config.webui.retryOnServerFailure,
          serverRecheckMs: Math.min(config.webui.healthIntervalMs, 5_000),
          previewEvery: inf.previewEvery,
          maxDocumentBytes: 256 * 1024 * 1024,
        },
        log.child({ component: "webui" }),
      ),
    );
    this.endpoints.onBackInService((endpointId) => this.inferences.wakeWaiting(endpointId));
    const produced = new ProducedCheckpoints(this.storage, this.events, log.child({ component: "produced-checkpoints" }));
    this.models = new ModelService(
      this.db,
      this.events,
      this.queue,
      this.storage,
      new AsyncInvoker(this.sagemaker.runtime),
      this.checkpoints,
      produced,
      { bucket: deps.objectStore.bucket, utilityEndpoint: config.models.utilityEndpoint, taskTimeoutMs: config.models.taskTimeoutMs, watchInitialMs: config.models.watchInitialMs, maxDocumentBytes: 16 * 1024 * 1024 },
      log.child({ component: "models" }),
    );
    const tr = config.trainings;
    this.trainings = new TrainingService(
      this.db,
      this.events,
      this.queue,
      this.storage,
      new Trainer(this.sagemaker.control),
      produced,
      {
        bucket: deps.objectStore.bucket,
        region: config.awsRegion,
        image: tr.image ?? deps.sagemakerDefaults?.trainingImage,
        roleArn: tr.roleArn ?? deps.sagemakerDefaults?.executionRoleArn,
        instanceTypes: tr.instanceTypes,
        maxRuntimeSeconds: tr.maxRuntimeSeconds,
        maxWaitSeconds: tr.maxWaitSeconds,
        volumeSizeGb: tr.volumeSizeGb,
        watchInitialMs: tr.watchInitialMs,
        uploadUrlTtlSeconds: cp.uploadUrlTtlSeconds,
      },
      log.child({ component: "trainings" }),
    );
    this.sns = new SnsVerifier(() => [sm.successTopicArn, sm.errorTopicArn].filter((t): t is string => !!t));
    // Deleting an endpoint fails its jobs that were not dispatched yet.
    this.endpoints.onDeleting((endpointId, endpointName) => this.inferences.failQueuedForEndpoint(endpointId, endpointName).then(() => undefined));
  }

  private sealer: CredentialSealer | undefined;

  /** Seals endpoint credentials: CREDENTIALS_KEY, else a key derived from the session secret (known after start). */
  private credentialSealer(): CredentialSealer {
    this.sealer ??= new CredentialSealer(this.config.credentialsKey ? { key: Buffer.from(this.config.credentialsKey, "base64") } : { sessionSecret: this.access.sessionSecret() });
    return this.sealer;
  }

  /** Connects, migrates under the advisory lock and runs the first-start bootstrap. */
  async start(): Promise<BootstrapOutcome> {
    await this.db.initialize();
    if (this.deps.ensureBucket) await this.storage.ensureBucket();
    let bootstrap: Omit<BootstrapOutcome, "appliedMigrations"> = { adminCreated: false };
    const appliedMigrations = await migrateUnderLock(this.db, async () => {
      bootstrap = await this.access.bootstrap({
        adminUsername: this.config.adminUsername,
        ...(this.config.apiKey ? { apiKey: this.config.apiKey } : {}),
        ...(this.config.sessionSecret ? { sessionSecret: this.config.sessionSecret } : {}),
      });
    });
    return { appliedMigrations, ...bootstrap };
  }

  async startWorker(): Promise<void> {
    if (this.workers.length) return;
    const processors = buildProcessors({ systemChecks: this.systemChecks, endpoints: this.endpoints, checkpoints: this.checkpoints, inferences: this.inferences, models: this.models, trainings: this.trainings });
    const common = { connection: this.redis, prefix: this.config.queuePrefix, lockMs: this.config.jobLockMs, processors, parking: this.queue, log: this.log.child({ component: "worker" }), observer: this.metrics };
    this.workers = [
      startJobWorker({ ...common, queue: WORK_QUEUE, concurrency: this.config.workerConcurrency }),
      startJobWorker({ ...common, queue: WEBUI_QUEUE, concurrency: this.config.webUiWorkerConcurrency }),
    ];
    await this.queue.schedule("endpoints-reconcile", "endpoints.reconcile", {}, this.config.sagemaker.reconcileIntervalMs);
    await this.queue.schedule("webui-health", "webui.health", {}, this.config.webui.healthIntervalMs);
    await this.queue.schedule("trainings-reconcile", "trainings.reconcile", {}, this.config.sagemaker.reconcileIntervalMs);
    await this.queue.schedule("inferences-reconcile", "inferences.reconcile", {}, this.config.sagemaker.reconcileIntervalMs);
    await this.queue.schedule("checkpoints-housekeeping", "checkpoints.housekeeping", {}, this.config.checkpoints.housekeepingIntervalMs);
  }

  /** Lets running jobs finish (up to the caller's deadline), then closes every connection. */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.close().catch((err: unknown) => this.log.warn({ err }, "closing the worker failed"))));
    await this.queue.close().catch(() => undefined);
    await closeRedis(this.subscriber);
    await closeRedis(this.redis);
    this.storage.destroy();
    this.sagemaker.destroy();
    if (this.db.isInitialized) await this.db.destroy().catch(() => undefined);
  }
}
