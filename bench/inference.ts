/**
 * What Diffgate adds to an inference job, with the SageMaker emulator's timings all 0, in one run:
 *
 *   latency      BENCH_INFERENCE_JOBS (default 50) one-shot POST /inferences, one after the other;
 *                create→dispatched and create→succeeded event, as received on one myInferenceEvents
 *                subscription opened beforehand. Baseline: runSystemCheck → its terminal jobEvents
 *                event (a job through the same queue, worker and event log that invokes nothing).
 *   throughput   BENCH_INFERENCE_THROUGHPUT (default 1,000) jobs through one endpoint, created 32 at a
 *                time: jobs/s from the first create to the last succeeded event. Baseline: the rate
 *                of the creates themselves (the API half of the same jobs).
 *   pagination   inferences(first: 50) over GraphQL on a table seeded with BENCH_INFERENCE_ROWS
 *                (default 1,000,000) rows (INSERT … SELECT generate_series): the first page against
 *                a page half-way down (via the cursor of the row at that depth), p50 of 30 each,
 *                alternating; target deep/first ≤ 2.
 *
 * Diffgate starts in this process on the embedded defaults (bench/bench-stack.ts); the built-in
 * emulator must answer for SageMaker and ROLE must be all.
 * Output: a table on stdout and bench/results/inference.json. Exit status: 0 when every job succeeded
 * and the deep/first ratio is ≤ 2, 1 otherwise or on failure, 2 bad settings, 3 no Redis, 130 interrupted.
 */
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { BenchRun, UsageError, Waiter, followMyInferences, environment, packageRoot, percentile, positiveInt, ratio, runBench, startDiffgate } from "./bench-stack.js";

const EMULATOR_ENV = {
  EMULATOR_ENDPOINT_CREATE_MS: "0",
  EMULATOR_ENDPOINT_UPDATE_MS: "0",
  EMULATOR_ENDPOINT_DELETE_MS: "0",
  EMULATOR_INVOCATION_START_MS: "0",
  EMULATOR_INVOCATION_STEP_MS: "0",
  EMULATOR_FAIL_INSTANCE_TYPES: "",
};
const TIMEOUT_MS = 120_000;
const PAGE_REPEATS = 30;
const PAGE = `query($after: String) { inferences(first: 50, after: $after) { edges { node { id } } pageInfo { hasNextPage endCursor } } }`;

const p = (xs: number[], q: number) => percentile([...xs].sort((a, b) => a - b), q);
const r1 = (n: number) => Math.round(n * 10) / 10;

async function main(run: BenchRun): Promise<number> {
  const jobs = positiveInt(process.env, "BENCH_INFERENCE_JOBS", 50, 10_000);
  const throughputJobs = positiveInt(process.env, "BENCH_INFERENCE_THROUGHPUT", 1000, 100_000);
  const seedRows = positiveInt(process.env, "BENCH_INFERENCE_ROWS", 1_000_000, 10_000_000);
  const d = await startDiffgate(run, {
    env: EMULATOR_ENV,
    checkConfig: (c) => {
      if (c.role !== "all") throw new UsageError("ROLE must be all (the bench needs the worker)");
      if (process.env.SAGEMAKER_ENDPOINT) throw new UsageError("SAGEMAKER_ENDPOINT must be unset: the built-in emulator answers");
    },
  });
  const headers = { "content-type": "application/json", "x-api-key": d.apiKey };
  const post = async (url: string, body: unknown) => {
    const res = await fetch(`${d.baseUrl}${url}`, { method: "POST", headers, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any };
  };
  const gql = (query: string, variables: Record<string, unknown> = {}) => post("/graphql", { query, variables });

  // One endpoint.
  const deployed = await post("/endpoints", { endpoint_name: "bench", instance_type: "ml.g5.xlarge", initial_instance_count: 1, autoscaling_enabled: false });
  if (deployed.status !== 202) throw new Error(`POST /endpoints answered ${deployed.status}: ${JSON.stringify(deployed.body)}`);
  const endpoint = deployed.body.data.endpoint_name as string;
  for (const deadline = Date.now() + 30_000; ; ) {
    const r = await gql(`query($n: String!) { endpoint(name: $n) { status } }`, { n: endpoint });
    if (r.body.data?.endpoint?.status === "InService") break;
    if (Date.now() > deadline) throw new Error(`endpoint ${endpoint} not InService: ${JSON.stringify(r.body)}`);
    await new Promise((res) => setTimeout(res, 50));
  }

  // Every event of the admin's jobs, with its arrival time.
  const waiter = new Waiter(run, TIMEOUT_MS);
  const { arrivals, client } = await followMyInferences(run, d, waiter);
  const waitFor = (done: () => boolean, what: string) => waiter.until(done, what);
  const createJob = async (n: number) => {
    const res = await post("/inferences", { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: `bench ${n}`, steps: 1, width: 64, height: 64 });
    if (res.status !== 202) throw new Error(`POST /inferences answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body.data.inference_id as string;
  };

  // Baseline: system checks, then the latency jobs (one warm-up of each).
  const followCheck = async () => {
    const t0 = performance.now();
    const r = await gql(`mutation { runSystemCheck { id } }`);
    const id = r.body.data.runSystemCheck.id as string;
    await new Promise<void>((resolve, reject) => {
      client.subscribe<{ jobEvents: { terminal: boolean } }>({ query: `subscription($id: ID!) { jobEvents(jobId: $id, after: 0) { terminal } }`, variables: { id } }, { next: (m) => (m.data?.jobEvents.terminal ? resolve() : undefined), error: reject, complete: resolve });
    });
    return performance.now() - t0;
  };
  const runJob = async (n: number) => {
    const t0 = performance.now();
    const id = await createJob(n);
    await waitFor(() => arrivals.get(id)?.succeeded !== undefined || arrivals.get(id)?.failed !== undefined, `job ${id}`);
    const a = arrivals.get(id)!;
    if (a.failed) throw new Error(`job ${id} failed: ${a.failed}`);
    return { dispatched: a.dispatched! - t0, succeeded: a.succeeded! - t0 };
  };
  await followCheck();
  await runJob(-1);
  const checkMs: number[] = [];
  const dispatchedMs: number[] = [];
  const succeededMs: number[] = [];
  for (let i = 0; i < jobs; i++) {
    checkMs.push(await followCheck());
    const j = await runJob(i);
    dispatchedMs.push(j.dispatched);
    succeededMs.push(j.succeeded);
  }

  // Throughput through the one endpoint.
  const ids: string[] = [];
  const tStart = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < throughputJobs) {
        const n = next++;
        ids.push(await createJob(1_000_000 + n));
      }
    }),
  );
  const tCreated = performance.now();
  await waitFor(() => ids.every((id) => arrivals.get(id)?.succeeded !== undefined || arrivals.get(id)?.failed !== undefined), `${throughputJobs} jobs`);
  const failedJobs = ids.filter((id) => arrivals.get(id)?.failed).length;
  const tLast = Math.max(...ids.map((id) => arrivals.get(id)?.succeeded ?? 0));
  const jobsPerSecond = (throughputJobs - failedJobs) / ((tLast - tStart) / 1000);
  const createsPerSecond = throughputJobs / ((tCreated - tStart) / 1000);

  // Pagination on a big table.
  process.stdout.write(`Seeding ${seedRows} rows ...\n`);
  const db = d.runtime.db;
  const [ep] = (await db.query(`SELECT id FROM endpoints WHERE name = $1`, [endpoint])) as Array<{ id: string }>;
  const seedStart = performance.now();
  await db.query(
    `INSERT INTO inferences (id, task_type, status, endpoint_id, endpoint_name, creator_id, params_key, payload_key, created_at)
     SELECT gen_random_uuid(), 'txt2img', 'SUCCEEDED', $1, $2, NULL, 'seed', 'seed', timestamptz '2020-01-01 00:00:00+00' + g * interval '1 millisecond'
     FROM generate_series(1, $3::int) g`,
    [ep!.id, endpoint, seedRows],
  );
  await db.query(`ANALYZE inferences`);
  const seedSeconds = (performance.now() - seedStart) / 1000;
  const depth = Math.floor(seedRows / 2);
  const [at] = (await db.query(`SELECT id, created_at AS "createdAt" FROM inferences ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1`, [depth - 1])) as Array<{ id: string; createdAt: Date }>;
  const deepCursor = Buffer.from(JSON.stringify({ createdAt: at!.createdAt.toISOString(), id: at!.id })).toString("base64url");
  const page = async (after?: string) => {
    const t0 = performance.now();
    const r = await gql(PAGE, after ? { after } : {});
    const ms = performance.now() - t0;
    if (r.body.errors || r.body.data.inferences.edges.length !== 50) throw new Error(`inferences answered ${JSON.stringify(r.body).slice(0, 300)}`);
    return ms;
  };
  await page();
  await page(deepCursor);
  const firstMs: number[] = [];
  const deepMs: number[] = [];
  for (let i = 0; i < PAGE_REPEATS; i++) {
    firstMs.push(await page());
    deepMs.push(await page(deepCursor));
  }
  const pageRatio = ratio(p(deepMs, 50), p(firstMs, 50));

  const results = {
    when: new Date().toISOString(),
    environment: environment(),
    dependencies: d.dependencyNotes,
    emulator: EMULATOR_ENV,
    latency: {
      jobs,
      createToDispatchedMs: { p50: r1(p(dispatchedMs, 50)), p99: r1(p(dispatchedMs, 99)) },
      createToSucceededEventMs: { p50: r1(p(succeededMs, 50)), p99: r1(p(succeededMs, 99)) },
      baselineSystemCheckMs: { p50: r1(p(checkMs, 50)), p99: r1(p(checkMs, 99)) },
    },
    throughput: { jobs: throughputJobs, failed: failedJobs, jobsPerSecond: r1(jobsPerSecond), baselineCreatesPerSecond: r1(createsPerSecond) },
    pagination: {
      rows: seedRows,
      seedSeconds: r1(seedSeconds),
      depth,
      firstPageP50Ms: r1(p(firstMs, 50)),
      deepPageP50Ms: r1(p(deepMs, 50)),
      deepOverFirst: Math.round(pageRatio * 100) / 100,
      target: "≤ 2",
    },
  };
  const lines = [
    `latency over ${jobs} jobs (ms)        p50      p99`,
    `  create → dispatched        ${String(results.latency.createToDispatchedMs.p50).padStart(8)} ${String(results.latency.createToDispatchedMs.p99).padStart(8)}`,
    `  create → succeeded event   ${String(results.latency.createToSucceededEventMs.p50).padStart(8)} ${String(results.latency.createToSucceededEventMs.p99).padStart(8)}`,
    `  baseline: system check     ${String(results.latency.baselineSystemCheckMs.p50).padStart(8)} ${String(results.latency.baselineSystemCheckMs.p99).padStart(8)}`,
    `throughput: ${results.throughput.jobsPerSecond} jobs/s over ${throughputJobs} jobs (${failedJobs} failed); baseline creates/s ${results.throughput.baselineCreatesPerSecond}`,
    `inferences(first: 50) on ${seedRows} rows: first page p50 ${results.pagination.firstPageP50Ms} ms, ${depth} deep p50 ${results.pagination.deepPageP50Ms} ms, ratio ${results.pagination.deepOverFirst} (target ≤ 2)`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  const out = path.join(packageRoot(), "bench", "results", "inference.json");
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`wrote ${out}\n`);
  return failedJobs === 0 && pageRatio <= 2 ? 0 : 1;
}

await runBench(main);
