import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { exportSdkEndpointOverrides, loadConfig } from "../../src/config.js";
import { createHttpServer, type HttpServer } from "../../src/http-server.js";
import { startEmbeddedS3, type RunningS3 } from "../../src/local/embedded-s3.js";
import { startS3FaultProxy, type S3FaultProxy } from "./s3-fault-proxy.js";
import { EMULATOR_SAGEMAKER_DEFAULTS } from "../../src/local/embedded-dependencies.js";
import type { EmulatorSettings } from "../../src/local/emulator-state.js";
import { startSageMakerEmulator, type SageMakerEmulator } from "../../src/local/sagemaker-emulator.js";
import { Runtime } from "../../src/runtime.js";
import { createTestDatabase, TEST_REDIS_URL, type TestDatabase } from "./test-database.js";

export interface TestStack {
  runtime: Runtime;
  http: HttpServer;
  emulator: SageMakerEmulator;
  baseUrl: string;
  wsUrl: string;
  adminKey: string;
  /** Environment for a second Diffgate process sharing this stack's Postgres, Redis, store and emulator. */
  childEnv: Record<string, string>;
  db: TestDatabase;
  /** With `s3FaultProxy`: the proxy Diffgate reaches its store through, to make S3 shed load. */
  s3Faults?: S3FaultProxy;
  close(): Promise<void>;
}

export interface StackOptions {
  env?: Record<string, string>;
  worker?: boolean;
  /** The emulator's timings; by default endpoints take 200 ms to create and 100 ms to delete. */
  emulator?: Partial<EmulatorSettings>;
  /** Diffgate (not the emulator) reaches the store through a proxy that can answer 503 SlowDown. */
  s3FaultProxy?: boolean;
}

/** Real Postgres (own database), real Redis (own prefix), s3rver and the emulator, and Diffgate's API on a free port. */
export async function startTestStack(options: StackOptions = {}): Promise<TestStack> {
  const db = await createTestDatabase();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "diffgate-test-"));
  const queuePrefix = `t${randomBytes(5).toString("hex")}`;
  const bucket = "diffgate-test";
  let s3: RunningS3 | undefined;
  let emulator: SageMakerEmulator | undefined;
  let s3Faults: S3FaultProxy | undefined;
  try {
    s3 = await startEmbeddedS3(dataDir, bucket);
    if (options.s3FaultProxy) s3Faults = await startS3FaultProxy(s3.endpoint);
    const storeEndpoint = s3Faults?.endpoint ?? s3.endpoint;
    emulator = await startSageMakerEmulator({
      settings: {
        endpointCreateMs: 200,
        endpointUpdateMs: 100,
        endpointDeleteMs: 100,
        invocationStartMs: 20,
        invocationStepMs: 5,
        // Invocations read their input from and write their output to this stack's store.
        s3: { endpoint: s3.endpoint, credentials: s3.credentials, forcePathStyle: true, region: "us-east-1" },
        ...options.emulator,
      },
    });
    const adminKey = `test_admin_${randomBytes(12).toString("hex")}`;
    const env: Record<string, string> = {
      DATA_DIR: dataDir,
      PORT: "0",
      LOG_LEVEL: "silent",
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      S3_BUCKET: bucket,
      S3_ENDPOINT: storeEndpoint,
      SAGEMAKER_ENDPOINT: emulator.url,
      QUEUE_PREFIX: queuePrefix,
      API_KEY: adminKey,
      JOB_LOCK_MS: "2000",
      INFERENCE_WATCH_INITIAL_MS: "50",
      SAGEMAKER_EXECUTION_ROLE_ARN: EMULATOR_SAGEMAKER_DEFAULTS("us-east-1").executionRoleArn,
      INFERENCE_IMAGE_URI: EMULATOR_SAGEMAKER_DEFAULTS("us-east-1").inferenceImage,
      TRAINING_IMAGE_URI: EMULATOR_SAGEMAKER_DEFAULTS("us-east-1").trainingImage,
      ...options.env,
    };
    const config = loadConfig(env);
    exportSdkEndpointOverrides({ sagemaker: emulator.url, credentials: { accessKeyId: "emulator", secretAccessKey: "emulator" } });
    const runtime = new Runtime(config, { databaseUrl: db.url, redisUrl: TEST_REDIS_URL, objectStore: { bucket, region: config.awsRegion, endpoint: storeEndpoint, forcePathStyle: true, credentials: s3.credentials }, ensureBucket: true }, pino({ level: "silent" }));
    await runtime.start();
    if (options.worker) await runtime.startWorker();
    const http = await createHttpServer(runtime);
    const baseUrl = await http.listen(0, "127.0.0.1");
    // Progress callbacks from the emulator come back to this server, whose port is known only now.
    if (!env.PUBLIC_URL) runtime.inferences.setPublicUrl(baseUrl);
    const s3Stop = s3.stop;
    const emulatorStop = emulator.stop;
    return {
      runtime,
      http,
      emulator,
      baseUrl,
      wsUrl: `${baseUrl.replace(/^http/, "ws")}/graphql`,
      adminKey,
      db,
      ...(s3Faults ? { s3Faults } : {}),
      childEnv: { ...env, AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey },
      async close() {
        await http.close();
        await runtime.close();
        await emulatorStop();
        await s3Faults?.stop();
        await s3Stop();
        await db.drop();
        await rm(dataDir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    await emulator?.stop();
    await s3Faults?.stop();
    await s3?.stop();
    await db.drop();
    throw e;
  }
}

/** REST call helper: JSON in, status + parsed body + headers out. */
export async function rest(baseUrl: string, method: string, route: string, options: { key?: string; bearer?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key) headers["x-api-key"] = options.key;
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
  let body: string | undefined;
  if (options.rawBody !== undefined) body = options.rawBody;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined && !headers["content-type"]) headers["content-type"] = "application/json";
  const res = await fetch(`${baseUrl}${route}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, body: json, text, headers: res.headers };
}

/** GraphQL over HTTP. */
export async function gql(baseUrl: string, query: string, variables: Record<string, unknown> = {}, auth: { key?: string; bearer?: string } = {}) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (auth.key) headers["x-api-key"] = auth.key;
  if (auth.bearer) headers.authorization = `Bearer ${auth.bearer}`;
  const res = await fetch(`${baseUrl}/graphql`, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  return { status: res.status, body: (await res.json()) as { data?: any; errors?: Array<{ message: string; extensions?: { code?: string; field?: string } }> } };
}

export function hexUsername(username: string): string {
  return Buffer.from(username, "utf8").toString("hex").toUpperCase();
}
