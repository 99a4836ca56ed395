/**
 * What Diffgate's HTTP stack costs compared with a bare node:http server, measured in one run:
 *
 *   baseline  GET  /         node:http answering {"statusCode":200,"message":"pong"}
 *   rest      GET  /ping     Diffgate REST (API-key authentication, envelope)
 *   graphql   POST /graphql  Diffgate GraphQL `{ me { username } }`
 *
 * Diffgate starts in this process the way src/main.ts starts it, on the embedded defaults (embedded
 * Postgres unless DATABASE_URL is set; the Redis on 127.0.0.1:6379 if one answers) in a fresh
 * DATA_DIR that is removed afterwards (see bench/bench-stack.ts). The load generator, autocannon,
 * runs in a worker thread so that it does not compete with the servers for their event loop.
 *
 * Env: BENCH_CONNECTIONS (default 10), BENCH_SECONDS (default 5; each target also gets a 1 s warm-up).
 * Output: a table on stdout and bench/results/http-overhead.json.
 * Exit status: 0 when every response was 2xx with the expected body, 1 otherwise or on failure,
 * 2 on bad settings, 3 when no Redis is available, 130 when interrupted (SIGINT or SIGTERM).
 */
import { mkdir, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import autocannon from "autocannon";
import { BenchRun, Interrupted, environment, isRecord, packageRoot, parseJson, percentile, positiveInt, ratio, runBench, startDiffgate } from "./bench-stack.js";

const WARMUP_SECONDS = 1;
const PONG = JSON.stringify({ statusCode: 200, message: "pong" });
const GRAPHQL_QUERY = JSON.stringify({ query: "{ me { username } }" });

// ------------------------------------------------------------------ shared between the threads

/** What the load worker is asked to do. */
interface LoadSpec {
  url: string;
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  /** Every response must have exactly this body (taken from a checked preflight request). */
  expectBody: string;
  connections: number;
  seconds: number;
  warmupSeconds: number;
}

interface Counters {
  requests: number;
  non2xx: number;
  /** Connection errors, timeouts included. */
  errors: number;
  timeouts: number;
  /** Responses whose body was not the expected one. */
  mismatches: number;
  statusCodes: Record<string, number>;
}

interface LoadResult extends Counters {
  durationSeconds: number;
  requestsPerSecond: number;
  latencyMs: { mean: number; p50: number; p90: number; p99: number; max: number };
  warmup: Counters;
}

function counters(raw: autocannon.RawResult): Counters {
  return {
    requests: raw.totalCompletedRequests,
    non2xx: raw.non2xx,
    errors: raw.errors,
    timeouts: raw.timeouts,
    mismatches: raw.mismatches,
    statusCodes: Object.fromEntries(Object.entries(raw.statusCodeStats).map(([code, { count }]) => [code, count])),
  };
}

// ------------------------------------------------------------------ the load worker

/**
 * autocannon's own latency histogram records whole milliseconds (a bare server's p50 comes out as 0),
 * so latencies are taken from its "response" events, which carry fractional milliseconds.
 */
async function generateLoad(spec: LoadSpec): Promise<LoadResult> {
  const latencies: number[] = [];
  const instance = autocannon({
    url: spec.url,
    method: spec.method,
    headers: spec.headers,
    ...(spec.body !== undefined ? { body: spec.body } : {}),
    expectBody: spec.expectBody,
    connections: spec.connections,
    duration: spec.seconds,
    warmup: { connections: spec.connections, duration: spec.warmupSeconds },
    skipAggregateResult: true,
  });
  instance.on("response", (_client, _statusCode, _bytes, responseTime) => {
    latencies.push(responseTime);
  });
  const raw = await instance;
  const sorted = Float64Array.from(latencies).sort();
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    ...counters(raw),
    durationSeconds: raw.duration,
    requestsPerSecond: raw.duration > 0 ? raw.totalCompletedRequests / raw.duration : 0,
    latencyMs: {
      mean: sorted.length ? sum / sorted.length : Number.NaN,
      p50: percentile(sorted, 50),
      p90: percentile(sorted, 90),
      p99: percentile(sorted, 99),
      max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN,
    },
    warmup: raw.warmup ? counters(raw.warmup) : { requests: 0, non2xx: 0, errors: 0, timeouts: 0, mismatches: 0, statusCodes: {} },
  };
}

// ------------------------------------------------------------------ the main thread

interface Settings {
  connections: number;
  seconds: number;
}

function readSettings(env: NodeJS.ProcessEnv): Settings {
  return { connections: positiveInt(env, "BENCH_CONNECTIONS", 10, 10_000), seconds: positiveInt(env, "BENCH_SECONDS", 5, 3600) };
}

interface Target {
  name: string;
  description: string;
  spec: Omit<LoadSpec, "expectBody" | "connections" | "seconds" | "warmupSeconds">;
  /** Checks a preflight response body; returns what is wrong with it, if anything. */
  check(body: string): string | undefined;
}

interface TargetReport extends LoadResult {
  name: string;
  request: string;
  ratiosToBaseline: { requestsPerSecond: number; p50: number; p99: number };
  ok: boolean;
}

function checkPong(body: string): string | undefined {
  const parsed = parseJson(body);
  return isRecord(parsed) && parsed.statusCode === 200 && parsed.message === "pong" ? undefined : `expected ${PONG}, got ${body.slice(0, 200)}`;
}

function checkMe(body: string): string | undefined {
  const parsed = parseJson(body);
  if (!isRecord(parsed)) return `expected a JSON object, got ${body.slice(0, 200)}`;
  if (parsed.errors !== undefined) return `GraphQL errors: ${JSON.stringify(parsed.errors).slice(0, 300)}`;
  const me = isRecord(parsed.data) ? parsed.data.me : undefined;
  return isRecord(me) && typeof me.username === "string" && me.username ? undefined : `expected data.me.username, got ${body.slice(0, 200)}`;
}

/** One request before the load, so that a wrong answer stops the bench instead of being measured. */
async function preflight(target: Target): Promise<string> {
  const { url, method, headers, body } = target.spec;
  const response = await fetch(url, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await response.text();
  if (!response.ok) throw new Error(`${target.name}: preflight ${method} ${url} answered ${response.status}: ${text.slice(0, 300)}`);
  const problem = target.check(text);
  if (problem) throw new Error(`${target.name}: preflight ${method} ${url}: ${problem}`);
  return text;
}

let activeWorker: Worker | undefined;

function runLoadWorker(run: BenchRun, spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    // execArgv: [] because process-wide flags (such as --openssl-legacy-provider) do not apply to workers.
    const worker = new Worker(new URL(import.meta.url), { workerData: spec, execArgv: [] });
    activeWorker = worker;
    let result: LoadResult | undefined;
    worker.once("message", (message: LoadResult) => (result = message));
    worker.once("error", reject);
    worker.once("exit", (code) => {
      activeWorker = undefined;
      if (result) resolve(result);
      else reject(run.interrupted ? new Interrupted("interrupted") : new Error(`the load worker exited with code ${code} without a result`));
    });
  });
}

async function startBaseline(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((_request, response) => {
    response.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(PONG) });
    response.end(PONG);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function printTable(reports: TargetReport[]): void {
  const header = ["target", "request", "req/s", "p50 ms", "p99 ms", "req/s ratio", "p50 ratio", "p99 ratio", "non-2xx", "errors", "bad body"];
  const rows = reports.map((r) => [
    r.name,
    r.request,
    r.requestsPerSecond.toFixed(0),
    r.latencyMs.p50.toFixed(3),
    r.latencyMs.p99.toFixed(3),
    `${r.ratiosToBaseline.requestsPerSecond.toFixed(2)}x`,
    `${r.ratiosToBaseline.p50.toFixed(2)}x`,
    `${r.ratiosToBaseline.p99.toFixed(2)}x`,
    String(r.non2xx + r.warmup.non2xx),
    String(r.errors + r.warmup.errors),
    String(r.mismatches + r.warmup.mismatches),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  process.stdout.write(`\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n${rows.map(line).join("\n")}\n\n`);
}

async function main(run: BenchRun): Promise<number> {
  const settings = readSettings(process.env);
  run.onInterrupt(() => void activeWorker?.terminate());

  // The baseline starts once the configuration is accepted, before Diffgate's dependencies, so that the
  // cleanups run in reverse start order: Diffgate's HTTP server, the runtime, the dependencies, the
  // baseline, the data dir.
  const started: { baseline?: Awaited<ReturnType<typeof startBaseline>> } = {};
  const { config, dependencyNotes, baseUrl: base, apiKey } = await startDiffgate(run, {
    beforeDependencies: async () => {
      const baseline = await startBaseline();
      started.baseline = baseline;
      run.cleanup("closing the baseline server", baseline.close);
    },
  });
  const { baseline } = started;
  if (!baseline) throw new Error("the baseline server did not start");

  const targets: Target[] = [
    { name: "baseline", description: "GET / (node:http)", spec: { url: `${baseline.url}/`, method: "GET", headers: {} }, check: checkPong },
    { name: "rest", description: "GET /ping", spec: { url: `${base}/ping`, method: "GET", headers: { "x-api-key": apiKey } }, check: checkPong },
    {
      name: "graphql",
      description: "POST /graphql { me { username } }",
      spec: { url: `${base}/graphql`, method: "POST", headers: { "content-type": "application/json", "x-api-key": apiKey }, body: GRAPHQL_QUERY },
      check: checkMe,
    },
  ];

  process.stdout.write(
    `Load: autocannon, ${settings.connections} connections, ${WARMUP_SECONDS} s warm-up + ${settings.seconds} s per target, in a worker thread\n`,
  );
  const results: Array<{ target: Target; result: LoadResult }> = [];
  for (const target of targets) {
    run.throwIfInterrupted();
    const expectBody = await preflight(target);
    process.stdout.write(`  ${target.name.padEnd(8)} ${target.description} ...`);
    const result = await runLoadWorker(run, { ...target.spec, expectBody, connections: settings.connections, seconds: settings.seconds, warmupSeconds: WARMUP_SECONDS });
    process.stdout.write(` ${result.requests} requests\n`);
    results.push({ target, result });
  }

  const baselineResult = results[0]!.result;
  const reports: TargetReport[] = results.map(({ target, result }) => ({
    name: target.name,
    request: target.description,
    ...result,
    ratiosToBaseline: {
      requestsPerSecond: ratio(result.requestsPerSecond, baselineResult.requestsPerSecond),
      p50: ratio(result.latencyMs.p50, baselineResult.latencyMs.p50),
      p99: ratio(result.latencyMs.p99, baselineResult.latencyMs.p99),
    },
    ok:
      result.requests > 0 &&
      result.non2xx + result.errors + result.mismatches + result.warmup.non2xx + result.warmup.errors + result.warmup.mismatches === 0,
  }));
  printTable(reports);

  const ok = reports.every((r) => r.ok);
  const resultsDir = path.join(packageRoot(), "bench", "results");
  await mkdir(resultsDir, { recursive: true });
  const resultsFile = path.join(resultsDir, "http-overhead.json");
  const document = {
    benchmark: "http-overhead",
    generatedAt: new Date().toISOString(),
    ok,
    settings: {
      connections: settings.connections,
      durationSeconds: settings.seconds,
      warmupSeconds: WARMUP_SECONDS,
      loadGenerator: "autocannon 9 in a worker thread; latencies from per-response times",
      latencyPercentiles: "nearest rank over every response of the measured run",
    },
    environment: environment(),
    diffgate: { role: config.role, dependencies: dependencyNotes },
    targets: reports,
  };
  await writeFile(resultsFile, `${JSON.stringify(document, null, 2)}\n`);
  process.stdout.write(`Results written to ${path.relative(process.cwd(), resultsFile) || resultsFile}\n`);

  if (!ok) {
    for (const r of reports.filter((x) => !x.ok)) {
      process.stderr.write(
        `bench: ${r.name}: ${r.non2xx + r.warmup.non2xx} non-2xx, ${r.errors + r.warmup.errors} errors (${r.timeouts + r.warmup.timeouts} timeouts), ` +
          `${r.mismatches + r.warmup.mismatches} unexpected bodies; status codes ${JSON.stringify(r.statusCodes)}\n`,
      );
    }
  }
  return ok ? 0 : 1;
}

if (isMainThread) {
  await runBench(main);
} else {
  parentPort!.postMessage(await generateLoad(workerData as LoadSpec));
}
