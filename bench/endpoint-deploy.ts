/**
 * What Diffgate itself adds to deploying an endpoint, with the SageMaker emulator's delays all 0 (so
 * the emulator reports InService on the first DescribeEndpoint), measured in one run:
 *
 *   deploy        POST /graphql deployEndpoint (Async, ml.g4dn.xlarge, 1 instance), then at once
 *                 subscribe to endpointEvents(name, after: 0) and wait for the "status" event with
 *                 data.status "InService": time from sending the mutation to receiving that event
 *   system check  POST /graphql runSystemCheck, then jobEvents(jobId, after: 0) until its terminal
 *                 event: a job through the same queue, worker and event log that deploys no
 *                 endpoint (its probes ping Postgres, Redis, the object store and the emulator)
 *
 * The two alternate (system check i, then deploy i), after one unmeasured warm-up of each; every
 * subscription goes over one graphql-ws connection opened before the first. The endpoints (b1..bN,
 * plus bw for the warm-up) are deleted with deleteEndpoints before Diffgate stops.
 *
 * Diffgate starts in this process on the embedded defaults, as bench/http-overhead.ts does (see
 * bench/bench-stack.ts); it must be the built-in emulator that answers for SageMaker, so
 * SAGEMAKER_ENDPOINT and S3_BUCKET must be unset, and ROLE must be all (the bench needs the worker).
 *
 * Env: BENCH_DEPLOYS (default 20), the number of measured deploys and system checks.
 * Output: a table on stdout and bench/results/endpoint-deploy.json.
 * Exit status: 0 when every deploy reached InService within 30 s of its mutation and every system
 * check succeeded, 1 otherwise or on failure, 2 on bad settings, 3 when no Redis is available,
 * 130 when interrupted (SIGINT or SIGTERM).
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import { BenchRun, UsageError, environment, graphql, isRecord, packageRoot, percentile, positiveInt, ratio, runBench, startDiffgate } from "./bench-stack.js";

/** How long a deploy (or a system check) may take, from sending its mutation, before it counts as failed. */
const TIMEOUT_MS = 30_000;
const INSTANCE_TYPE = "ml.g4dn.xlarge";
const INITIAL_INSTANCE_COUNT = 1;
const WARMUP_NAME = "bw";
/** How long a finished run waits for its endpoints to be Deleted (a shortfall is reported, not failed). */
const DELETE_WAIT_MS = 10_000;
/** The emulator's timings for this bench; EMULATOR_FAIL_INSTANCE_TYPES is cleared so that no deploy is made to fail. */
const EMULATOR_ENV = { EMULATOR_ENDPOINT_CREATE_MS: "0", EMULATOR_ENDPOINT_UPDATE_MS: "0", EMULATOR_ENDPOINT_DELETE_MS: "0", EMULATOR_FAIL_INSTANCE_TYPES: "" };

const DEPLOY = `mutation($input: DeployEndpointInput!) { deployEndpoint(input: $input) { name status } }`;
const ENDPOINT_EVENTS = `subscription($name: String!) { endpointEvents(name: $name, after: 0) { seq type data terminal createdAt } }`;
const RUN_SYSTEM_CHECK = `mutation { runSystemCheck { id status } }`;
const JOB_EVENTS = `subscription($id: ID!) { jobEvents(jobId: $id, after: 0) { seq type data terminal createdAt } }`;
const DELETE_ENDPOINTS = `mutation($names: [String!]!) { deleteEndpoints(names: $names) { name status } }`;
const ENDPOINTS = `{ endpoints { name status } }`;

interface StreamEvent {
  seq: number;
  type: string;
  data: Record<string, unknown>;
  terminal: boolean;
  createdAt: string;
}

/** One measured round trip. Times are ms from sending the mutation. */
interface Sample {
  iteration: number;
  /** The endpoint's SageMaker name, or the system check's id. */
  subject: string;
  ok: boolean;
  /** Until the mutation's HTTP response. */
  mutationMs: number;
  /** Until the awaited event (InService; the terminal event), when it came. */
  totalMs?: number;
  /** Between the first event and the awaited one, by the server's timestamps (created_at, ms resolution). */
  serverMs?: number;
  /** What was received, in order: "status:Creating", "step:model", ... */
  events: string[];
  problem?: string;
}

interface Stats {
  n: number;
  min: number;
  median: number;
  p90: number;
  max: number;
  mean: number;
}

function stats(values: number[]): Stats {
  const sorted = Float64Array.from(values).sort();
  return {
    n: sorted.length,
    min: sorted.length ? sorted[0]! : Number.NaN,
    median: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN,
    mean: sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : Number.NaN,
  };
}

const defined = (values: Array<number | undefined>) => values.filter((v): v is number => v !== undefined && Number.isFinite(v));

// ------------------------------------------------------------------ GraphQL over HTTP and graphql-ws


function describeError(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (isRecord(e) && typeof e.code === "number") return `the socket closed with ${e.code}${typeof e.reason === "string" && e.reason ? ` (${e.reason})` : ""}`;
  return JSON.stringify(e);
}

interface Followed {
  /** "reached": `until` matched; "completed": the stream ended first; "timeout"; "interrupted". */
  outcome: "reached" | "completed" | "timeout" | "interrupted";
  /** What arrived until then (events in flight when it unsubscribed are not included). */
  events: StreamEvent[];
  /** The event `until` matched, and performance.now() when it arrived. */
  matched?: StreamEvent;
  reachedAt?: number;
}

/**
 * Subscribes and collects events until `until` matches one (then unsubscribes), the stream
 * completes, `timeoutMs` passes or `abort` fires. GraphQL errors and socket errors reject.
 *
 * A stream's terminal event is not unsubscribed from: the server completes the subscription right
 * after it, and graphql-ws 6's client, given its own unsubscribe and the server's "complete" in one
 * read from the socket, releases the subscription twice; that takes away the lock that keeps a
 * non-lazy client connected, and every later subscription would then open and close a socket of
 * its own.
 */
function follow(client: Client, query: string, variables: Record<string, unknown>, field: string, until: (e: StreamEvent) => boolean, timeoutMs: number, abort: AbortSignal): Promise<Followed> {
  return new Promise((resolve, reject) => {
    const events: StreamEvent[] = [];
    let settled = false;
    let unsubscribe: (() => void) | undefined;
    const finish = (result: Followed | Error, serverCompletes = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      abort.removeEventListener("abort", onAbort);
      if (!serverCompletes) unsubscribe?.();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const onAbort = () => finish({ outcome: "interrupted", events });
    const timer = setTimeout(() => finish({ outcome: "timeout", events }), Math.max(0, timeoutMs));
    abort.addEventListener("abort", onAbort, { once: true });
    unsubscribe = client.subscribe<Record<string, StreamEvent>>(
      { query, variables },
      {
        next: (message) => {
          const receivedAt = performance.now();
          if (settled) return;
          if (message.errors?.length) return finish(new Error(`${field}: ${JSON.stringify(message.errors).slice(0, 300)}`));
          const event = message.data?.[field];
          if (!event) return finish(new Error(`${field}: a message without data: ${JSON.stringify(message).slice(0, 300)}`));
          events.push(event);
          if (until(event)) finish({ outcome: "reached", events, matched: event, reachedAt: receivedAt }, event.terminal);
        },
        error: (e) => finish(new Error(`${field}: ${describeError(e)}`)),
        complete: () => finish({ outcome: "completed", events }),
      },
    );
    if (settled) unsubscribe();
  });
}

/** Opens the one graphql-ws connection every subscription uses, and waits for its acknowledgement. */
async function connect(wsUrl: string, apiKey: string): Promise<{ client: Client; connections: () => number; closes: string[] }> {
  let connections = 0;
  const closes: string[] = [];
  let failure: ((e: unknown) => void) | undefined;
  const client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { "x-api-key": apiKey },
    lazy: false,
    retryAttempts: 0,
    onNonLazyError: (e) => failure?.(e),
    on: { connected: () => void connections++, closed: (e) => void closes.push(describeError(e)) },
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the graphql-ws connection was not acknowledged within 10 s")), 10_000);
      failure = (e) => {
        clearTimeout(timer);
        reject(new Error(`graphql-ws: ${describeError(e)}`));
      };
      if (connections > 0) {
        clearTimeout(timer);
        resolve();
      } else {
        const off = client.on("connected", () => {
          off();
          clearTimeout(timer);
          resolve();
        });
      }
    });
  } catch (e) {
    await client.dispose();
    throw e;
  }
  failure = (e) => process.stderr.write(`bench: graphql-ws: ${describeError(e)}\n`);
  return { client, connections: () => connections, closes };
}

// ------------------------------------------------------------------ the two round trips

const label = (e: StreamEvent) => `${e.type}${typeof e.data.status === "string" ? `:${e.data.status}` : typeof e.data.step === "string" ? `:${e.data.step}` : ""}`;

function serverSpan(events: StreamEvent[]): number | undefined {
  if (events.length < 2) return undefined;
  return Date.parse(events[events.length - 1]!.createdAt) - Date.parse(events[0]!.createdAt);
}

interface Api {
  baseUrl: string;
  apiKey: string;
  client: Client;
  abort: AbortSignal;
}

/** `onCreated` learns the endpoint's name as soon as the mutation has answered, so that it is deleted however the rest goes. */
async function deployOnce(api: Api, iteration: number, shortName: string, onCreated: (name: string) => void): Promise<Sample> {
  const started = performance.now();
  const data = await graphql(
    api.baseUrl,
    api.apiKey,
    DEPLOY,
    { input: { endpointName: shortName, instanceType: INSTANCE_TYPE, initialInstanceCount: INITIAL_INSTANCE_COUNT } },
    AbortSignal.any([api.abort, AbortSignal.timeout(TIMEOUT_MS)]),
  );
  const mutationMs = performance.now() - started;
  const deployed = data.deployEndpoint;
  if (!isRecord(deployed) || typeof deployed.name !== "string") throw new Error(`deployEndpoint answered ${JSON.stringify(data).slice(0, 300)}`);
  const name = deployed.name;
  onCreated(name);
  const followed = await follow(
    api.client,
    ENDPOINT_EVENTS,
    { name },
    "endpointEvents",
    (e) => e.type === "status" && (e.data.status === "InService" || e.data.status === "Failed"),
    TIMEOUT_MS - (performance.now() - started),
    api.abort,
  );
  const last = followed.matched;
  const inService = followed.outcome === "reached" && last?.data.status === "InService";
  const sample: Sample = { iteration, subject: name, ok: inService, mutationMs, events: followed.events.map(label) };
  if (followed.reachedAt !== undefined) sample.totalMs = followed.reachedAt - started;
  if (inService) sample.serverMs = serverSpan(followed.events);
  if (!inService) {
    sample.problem =
      followed.outcome === "reached"
        ? `went Failed: ${String(last?.data.reason ?? "no reason given")}`
        : followed.outcome === "timeout"
          ? `did not reach InService within ${TIMEOUT_MS / 1000} s`
          : followed.outcome === "completed"
            ? "its event stream ended before InService"
            : "interrupted";
  }
  return sample;
}

async function systemCheckOnce(api: Api, iteration: number): Promise<Sample> {
  const started = performance.now();
  const data = await graphql(api.baseUrl, api.apiKey, RUN_SYSTEM_CHECK, {}, AbortSignal.any([api.abort, AbortSignal.timeout(TIMEOUT_MS)]));
  const mutationMs = performance.now() - started;
  const check = data.runSystemCheck;
  if (!isRecord(check) || typeof check.id !== "string") throw new Error(`runSystemCheck answered ${JSON.stringify(data).slice(0, 300)}`);
  const followed = await follow(api.client, JOB_EVENTS, { id: check.id }, "jobEvents", (e) => e.terminal, TIMEOUT_MS - (performance.now() - started), api.abort);
  const last = followed.matched;
  const succeeded = followed.outcome === "reached" && last?.data.status === "SUCCEEDED";
  const sample: Sample = { iteration, subject: check.id, ok: succeeded, mutationMs, events: followed.events.map(label) };
  if (followed.reachedAt !== undefined) sample.totalMs = followed.reachedAt - started;
  if (succeeded) sample.serverMs = serverSpan(followed.events);
  if (!succeeded) {
    sample.problem =
      followed.outcome === "reached"
        ? `ended ${String(last?.data.status)} (failed probes: ${JSON.stringify(last?.data.failed ?? [])})`
        : followed.outcome === "timeout"
          ? `did not finish within ${TIMEOUT_MS / 1000} s`
          : followed.outcome === "completed"
            ? "its event stream ended without a terminal event"
            : "interrupted";
  }
  return sample;
}

/** Starts deleting the endpoints, then waits (up to `waitMs`) until they are all Deleted; returns those that are not. */
async function deleteEndpoints(api: Api, names: string[], waitMs: number): Promise<string[]> {
  for (let i = 0; i < names.length; i += 100) {
    await graphql(api.baseUrl, api.apiKey, DELETE_ENDPOINTS, { names: names.slice(i, i + 100) }, AbortSignal.timeout(10_000));
  }
  const deadline = Date.now() + waitMs;
  for (;;) {
    const data = await graphql(api.baseUrl, api.apiKey, ENDPOINTS, {}, AbortSignal.timeout(10_000));
    const listed = Array.isArray(data.endpoints) ? data.endpoints.filter(isRecord) : [];
    const remaining = names.filter((n) => !listed.some((e) => e.name === n && e.status === "Deleted"));
    if (remaining.length === 0 || Date.now() >= deadline) return remaining;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ------------------------------------------------------------------ main

function printTable(rows: Array<{ name: string; what: string; stats: Stats }>, lines: string[]): void {
  const fmt = (v: number) => (Number.isFinite(v) ? v.toFixed(1) : "-");
  const header = ["measurement", "what", "n", "min ms", "median ms", "p90 ms", "max ms"];
  const cells = rows.map((r) => [r.name, r.what, String(r.stats.n), fmt(r.stats.min), fmt(r.stats.median), fmt(r.stats.p90), fmt(r.stats.max)]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => (i < 2 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join("  ");
  process.stdout.write(`\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n${cells.map(line).join("\n")}\n\n${lines.join("\n")}\n\n`);
}

async function main(run: BenchRun): Promise<number> {
  const iterations = positiveInt(process.env, "BENCH_DEPLOYS", 20, 500);
  const interrupt = new AbortController();
  run.onInterrupt(() => interrupt.abort());

  const diffgate = await startDiffgate(run, {
    env: EMULATOR_ENV,
    checkConfig: (config) => {
      if (config.role !== "all") throw new UsageError(`ROLE=${config.role}: this bench needs Diffgate's HTTP server and its worker in one process; unset ROLE or set it to all`);
      if (config.sagemakerEndpoint || !config.s3.embedded) {
        throw new UsageError("this bench deploys endpoints, so it runs only against the built-in SageMaker emulator: unset SAGEMAKER_ENDPOINT and S3_BUCKET");
      }
    },
  });
  const { config, runtime, baseUrl, apiKey } = diffgate;
  // Imported only now: Diffgate's modules load after reflect-metadata (startDiffgate imports it first).
  const { recheckDelay } = await import("../src/services/endpoint-service.js");
  if (!diffgate.deps.sagemakerDefaults) throw new Error("the built-in SageMaker emulator did not start; refusing to deploy endpoints");

  const { client, connections, closes } = await connect(diffgate.wsUrl, apiKey);
  // Runs before Diffgate's HTTP server closes (cleanups run in reverse).
  run.cleanup("closing the graphql-ws client", async () => void (await client.dispose()));
  const api: Api = { baseUrl, apiKey, client, abort: interrupt.signal };

  // A run that ends early (a failure thrown, an interrupt) still asks for the endpoints' deletion,
  // before the client and Diffgate close; a finished run deletes them itself and waits for it.
  const created: string[] = [];
  let deletionRequested = false;
  run.cleanup("deleting the bench's endpoints", async () => {
    if (!deletionRequested && created.length) await deleteEndpoints(api, created, 0);
  });

  process.stdout.write(
    `Deploying ${iterations} endpoints (${INSTANCE_TYPE}, ${INITIAL_INSTANCE_COUNT} instance, Async) alternating with ${iterations} system checks, ` +
      `after one warm-up of each; emulator delays 0 ms\n`,
  );
  const deploys: Sample[] = [];
  const checks: Sample[] = [];
  const warmup: Sample[] = [];
  const failures: string[] = [];
  const onCreated = (name: string) => void created.push(name);
  const onDeploy = (sample: Sample) => {
    if (!sample.ok) failures.push(`deploy ${sample.subject}: ${sample.problem ?? "failed"}`);
  };
  const onCheck = (sample: Sample) => {
    if (!sample.ok) failures.push(`system check ${sample.subject}: ${sample.problem ?? "failed"}`);
  };

  const warmCheck = await systemCheckOnce(api, 0);
  onCheck(warmCheck);
  warmup.push(warmCheck);
  run.throwIfInterrupted();
  const warmDeploy = await deployOnce(api, 0, WARMUP_NAME, onCreated);
  onDeploy(warmDeploy);
  warmup.push(warmDeploy);

  for (let i = 1; i <= iterations && failures.length === 0; i++) {
    run.throwIfInterrupted();
    const check = await systemCheckOnce(api, i);
    onCheck(check);
    checks.push(check);
    run.throwIfInterrupted();
    const deploy = await deployOnce(api, i, `b${i}`, onCreated);
    onDeploy(deploy);
    deploys.push(deploy);
    process.stdout.write(`  ${String(i).padStart(3)}  system check ${check.totalMs?.toFixed(1) ?? "-"} ms  deploy ${deploy.subject} ${deploy.totalMs?.toFixed(1) ?? "-"} ms${deploy.ok ? "" : `  ${deploy.problem}`}\n`);
  }
  run.throwIfInterrupted();
  if (failures.length && deploys.length + checks.length < 2 * iterations) process.stderr.write("bench: stopped at the first failure\n");

  // How often each deploy job looked at SageMaker again (each look is parked for recheckDelay(n) first).
  const rechecks: Array<{ name: string; status: string; status_checks: number }> = await runtime.db.query(
    "SELECT name, status, status_checks FROM endpoints WHERE name = ANY($1) ORDER BY created_at",
    [created],
  );
  const recheckedEndpoints = rechecks.filter((r) => r.status_checks > 0);

  const deployStats = stats(defined(deploys.filter((s) => s.ok).map((s) => s.totalMs)));
  const checkStats = stats(defined(checks.filter((s) => s.ok).map((s) => s.totalMs)));
  const deployToCheck = ratio(deployStats.median, checkStats.median);
  const rows = [
    { name: "system check", what: "runSystemCheck -> jobEvents terminal event", stats: checkStats },
    { name: "  mutation", what: "runSystemCheck HTTP response", stats: stats(checks.map((s) => s.mutationMs)) },
    { name: "  server", what: "first -> terminal event (created_at)", stats: stats(defined(checks.map((s) => s.serverMs))) },
    { name: "deploy", what: "deployEndpoint -> endpointEvents InService", stats: deployStats },
    { name: "  mutation", what: "deployEndpoint HTTP response", stats: stats(deploys.map((s) => s.mutationMs)) },
    { name: "  server", what: "Creating -> InService event (created_at)", stats: stats(defined(deploys.map((s) => s.serverMs))) },
  ];
  const notes = [
    `deploy median / system-check median: ${Number.isFinite(deployToCheck) ? deployToCheck.toFixed(2) : "-"}x`,
    `deploy jobs that re-checked SageMaker (parked >= recheckDelay(0) = ${recheckDelay(0)} ms): ${recheckedEndpoints.length} of ${rechecks.length}` +
      (recheckedEndpoints.length ? ` (${recheckedEndpoints.map((r) => `${r.name}: ${r.status_checks}`).join(", ")})` : ""),
    `graphql-ws connections opened: ${connections()}${closes.length ? `; closed meanwhile: ${closes.join("; ")}` : ""}`,
  ];
  printTable(rows, notes);

  run.throwIfInterrupted();
  deletionRequested = true;
  const notDeleted = await deleteEndpoints(api, created, DELETE_WAIT_MS);
  process.stdout.write(`Deleted ${created.length - notDeleted.length} of ${created.length} endpoints\n`);
  if (notDeleted.length) process.stderr.write(`bench: not Deleted ${DELETE_WAIT_MS / 1000} s after deleteEndpoints: ${notDeleted.join(", ")}\n`);

  const ok = failures.length === 0 && deploys.length === iterations && checks.length === iterations;
  const resultsDir = path.join(packageRoot(), "bench", "results");
  await mkdir(resultsDir, { recursive: true });
  const resultsFile = path.join(resultsDir, "endpoint-deploy.json");
  const document = {
    benchmark: "endpoint-deploy",
    generatedAt: new Date().toISOString(),
    ok,
    settings: {
      iterations,
      warmupIterations: 1,
      order: "alternating: system check i, then deploy i; each waits for the previous to finish",
      timeoutMs: TIMEOUT_MS,
      deploy: { endpointType: "Async (the default; so autoscaling is registered too)", instanceType: INSTANCE_TYPE, initialInstanceCount: INITIAL_INSTANCE_COUNT },
      emulator: config.emulator,
      workerConcurrency: config.workerConcurrency,
      reconcileIntervalMs: config.sagemaker.reconcileIntervalMs,
      client: "mutations over HTTP (fetch, keep-alive); subscriptions over one graphql-ws connection opened before measuring, subscribed right after each mutation's response with after: 0",
      timing: "performance.now() from sending the mutation to receiving the awaited event; server = difference of the events' created_at",
      latencyPercentiles: "nearest rank over the successful samples",
    },
    environment: environment(),
    diffgate: { role: config.role, dependencies: diffgate.dependencyNotes },
    systemCheck: {
      request: "runSystemCheck, then jobEvents(jobId, after: 0) until the terminal event",
      totalMs: checkStats,
      mutationMs: rows[1]!.stats,
      serverMs: rows[2]!.stats,
      samples: checks,
    },
    deploy: {
      request: "deployEndpoint, then endpointEvents(name, after: 0) until status InService",
      totalMs: deployStats,
      mutationMs: rows[4]!.stats,
      serverMs: rows[5]!.stats,
      samples: deploys,
      statusChecks: rechecks.map((r) => ({ name: r.name, statusChecks: r.status_checks })),
    },
    ratios: { deployMedianToSystemCheckMedian: deployToCheck },
    warmup,
    graphqlWs: { connectionsOpened: connections(), closedMeanwhile: [...closes] },
    failures,
    cleanup: { deleteEndpoints: created.length, notDeletedWithin: { ms: DELETE_WAIT_MS, endpoints: notDeleted } },
  };
  await writeFile(resultsFile, `${JSON.stringify(document, null, 2)}\n`);
  process.stdout.write(`Results written to ${path.relative(process.cwd(), resultsFile) || resultsFile}\n`);

  for (const f of failures) process.stderr.write(`bench: ${f}\n`);
  return ok ? 0 : 1;
}

await runBench(main);
