/**
 * What Diffgate adds to jobs on a self-hosted WebUI endpoint, against the WebUI double
 * (test/helpers/webui-double.ts) in this process, in one run:
 *
 *   latency      BENCH_WEBUI_JOBS (default 100) one-shot POST /inferences (txt2img, 4 steps, 64×64),
 *                one after the other, on a double with stepMs 0: create → succeeded event, as received
 *                on one myInferenceEvents subscription opened beforehand. Baseline, interleaved: the
 *                same WebUI parameters POSTed straight to the double's /sdapi/v1/txt2img. Reported:
 *                p50/p99 of each, Diffgate's added ms (p50 − p50, p99 − p99) and the ratio.
 *   fan-out      one job of 150 steps on a second double with stepMs 20 (about 3 s of progress),
 *                created in upstream's two steps (POST /inferences, PUT the parameters to
 *                api_params_s3_upload_url) and followed by BENCH_WEBUI_SUBSCRIBERS (default 1,000)
 *                inferenceEvents(id, after: 0) subscriptions over graphql-ws (at most 50 connections,
 *                the subscriptions spread evenly), all replaying `created` before PUT /inferences/<id>/start.
 *                Deliveries/s = live deliveries (every event after start, to every subscriber) /
 *                (last delivery − first delivery); every subscriber must get the same gap-free seq 1..n
 *                ending in `succeeded`. Baseline: a bare `ws` WebSocketServer in this process sending
 *                the same events (graphql-ws `next` frames of the same JSON) to the same layout of
 *                sockets and subscriptions, one event after the other as fast as it can.
 *                Also reported, to show where the time goes: how long the job ran by its stored event
 *                times (against 150 × 20 ms on an idle double: everything shares this process's event
 *                loop), event stored → last subscriber, how many events carry a previewUrl (resolved
 *                per subscription; signed once per key, then reused) and what one resolution costs.
 *
 * Diffgate starts in this process on the embedded defaults (bench/bench-stack.ts) with
 * WEBUI_PROGRESS_INTERVAL_MS=50, DISPATCH_RECHECK_MS=200, WEBUI_HEALTH_INTERVAL_MS=60000; ROLE must be all.
 * Output: a table on stdout and bench/results/webui.json. Exit status: 0 when every job succeeded and
 * every subscriber got the complete sequence, 1 otherwise or on failure, 2 bad settings, 3 no Redis,
 * 130 interrupted.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdir, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { setImmediate as nextTurn } from "node:timers/promises";
import { createClient, type Client } from "graphql-ws";
import WebSocket, { WebSocketServer } from "ws";
import { startWebUiDouble } from "../test/helpers/webui-double.js";
import { BenchRun, UsageError, Waiter, followMyInferences, environment, packageRoot, percentile, positiveInt, ratio, runBench, startDiffgate } from "./bench-stack.js";

const DIFFGATE_ENV = {
  WEBUI_PROGRESS_INTERVAL_MS: "50",
  DISPATCH_RECHECK_MS: "200",
  WEBUI_HEALTH_INTERVAL_MS: "60000",
};
const JOB = { steps: 4, width: 64, height: 64 };
const FANOUT_JOB = { steps: 150, width: 64, height: 64 };
const FANOUT_STEP_MS = 20;
const MAX_CONNECTIONS = 50;
const TIMEOUT_MS = 60_000;

/** One inferenceEvents subscription of the fan-out part: what it received, in order. */
interface Follower {
  seqs: number[];
  types: string[];
  done: boolean;
  error?: string;
}

const p = (xs: number[], q: number) => percentile([...xs].sort((a, b) => a - b), q);
const r1 = (n: number) => Math.round(n * 10) / 10;
const r2 = (n: number) => Math.round(n * 100) / 100;

async function main(run: BenchRun): Promise<number> {
  const jobs = positiveInt(process.env, "BENCH_WEBUI_JOBS", 100, 10_000);
  const subscribers = positiveInt(process.env, "BENCH_WEBUI_SUBSCRIBERS", 1000, 20_000);
  const connections = Math.min(MAX_CONNECTIONS, subscribers);

  // The doubles first, so that they close after Diffgate (cleanups run in reverse).
  const fast = await startWebUiDouble({ stepMs: 0 });
  run.cleanup("closing the fast WebUI double", () => fast.close());
  const slow = await startWebUiDouble({ stepMs: FANOUT_STEP_MS });
  run.cleanup("closing the slow WebUI double", () => slow.close());

  const d = await startDiffgate(run, {
    env: DIFFGATE_ENV,
    checkConfig: (c) => {
      if (c.role !== "all") throw new UsageError("ROLE must be all (the bench needs the worker)");
    },
  });
  const headers = { "content-type": "application/json", "x-api-key": d.apiKey };
  const send = async (method: string, url: string, body: unknown) => {
    const res = await fetch(`${d.baseUrl}${url}`, { method, headers, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any };
  };
  const register = async (name: string, baseUrl: string) => {
    const r = await send("POST", "/endpoints/webui", { name, base_url: baseUrl });
    if (r.status !== 201 || r.body.data?.endpoint_status !== "InService") throw new Error(`POST /endpoints/webui answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body.data.endpoint_name as string;
  };
  // Names of this run's own, should DATABASE_URL be a database that outlives it.
  const suffix = randomBytes(3).toString("hex");
  const fastEndpoint = await register(`fast-${suffix}`, fast.url);
  const slowEndpoint = await register(`slow-${suffix}`, slow.url);

  // ------------------------------------------------------------ latency
  const waiter = new Waiter(run, TIMEOUT_MS);
  const { arrivals, client } = await followMyInferences(run, d, waiter);
  const waitFor = (done: () => boolean, what: string) => waiter.until(done, what);
  const params = (n: number) => ({ prompt: `bench ${n}`, ...JOB });
  const viaDiffgate = async (n: number) => {
    const t0 = performance.now();
    const res = await send("POST", "/inferences", { sagemaker_endpoint_name: fastEndpoint, task_type: "txt2img", ...params(n) });
    const answered = performance.now() - t0;
    if (res.status !== 202) throw new Error(`POST /inferences answered ${res.status}: ${JSON.stringify(res.body)}`);
    const id = res.body.data.inference_id as string;
    await waitFor(() => arrivals.get(id)?.succeeded !== undefined || arrivals.get(id)?.failed !== undefined, `job ${id}`);
    const a = arrivals.get(id)!;
    if (a.failed) throw new Error(`job ${id} failed: ${a.failed}`);
    return { answered, dispatched: a.dispatched! - t0, succeeded: a.succeeded! - t0 };
  };
  const direct = async (n: number) => {
    const t0 = performance.now();
    const res = await fetch(`${fast.url}/sdapi/v1/txt2img`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(params(n)) });
    const body = (await res.json()) as { images?: unknown[] };
    if (!res.ok || !Array.isArray(body.images) || body.images.length !== 1) throw new Error(`the double's txt2img answered ${res.status}: ${JSON.stringify(body).slice(0, 300)}`);
    return performance.now() - t0;
  };
  await direct(-1);
  await viaDiffgate(-1);
  const directMs: number[] = [];
  const diffgateMs: number[] = [];
  const dispatchedMs: number[] = [];
  const answeredMs: number[] = [];
  for (let i = 0; i < jobs; i++) {
    run.throwIfInterrupted();
    directMs.push(await direct(i));
    const j = await viaDiffgate(i);
    diffgateMs.push(j.succeeded);
    dispatchedMs.push(j.dispatched);
    answeredMs.push(j.answered);
  }
  await client.dispose();

  // ------------------------------------------------------------ fan-out
  process.stdout.write(`Fan-out: ${subscribers} subscriptions over ${connections} connections ...\n`);
  const created = await send("POST", "/inferences", { task_type: "txt2img", sagemaker_endpoint_name: slowEndpoint, models: {} });
  if (created.status !== 201) throw new Error(`POST /inferences (two-step) answered ${created.status}: ${JSON.stringify(created.body)}`);
  const jobId = created.body.data.inference.id as string;
  const uploaded = await fetch(created.body.data.inference.api_params_s3_upload_url as string, { method: "PUT", body: JSON.stringify({ prompt: "bench fan-out", ...FANOUT_JOB }) });
  if (!uploaded.ok) throw new Error(`PUT api_params_s3_upload_url answered ${uploaded.status}`);

  const followers: Follower[] = Array.from({ length: subscribers }, () => ({ seqs: [], types: [], done: false }));
  /** Every event as subscriber 0 received it, for the baseline's frames. */
  const sample: unknown[] = [];
  const firstAt = new Map<number, number>();
  const lastAt = new Map<number, number>();
  /** Date.now() at the last subscriber's receipt of each seq, against the event's createdAt. */
  const lastWall = new Map<number, number>();
  let liveDeliveries = 0;
  let firstLive = Number.POSITIVE_INFINITY;
  let lastLive = 0;
  let startedAt = Number.POSITIVE_INFINITY;
  const fanOut = new Waiter(run, TIMEOUT_MS);
  let replayed = 0;
  let finished = 0;
  const clients: Client[] = [];
  const FOLLOW = `subscription($id: ID!) { inferenceEvents(id: $id, after: 0) { seq type data terminal createdAt } }`;
  for (let c = 0; c < connections; c++) {
    const wsClient = createClient({ url: d.wsUrl, webSocketImpl: WebSocket, connectionParams: { "x-api-key": d.apiKey }, retryAttempts: 0 });
    clients.push(wsClient);
    run.cleanup(`closing graphql-ws connection ${c}`, () => wsClient.dispose() as Promise<void>);
  }
  followers.forEach((f, i) => {
    const end = (error?: string) => {
      if (f.done) return;
      f.done = true;
      if (error) f.error = error;
      finished++;
      fanOut.wake();
    };
    clients[i % connections]!.subscribe<{ inferenceEvents: { seq: number; type: string; data: Record<string, unknown>; terminal: boolean; createdAt: string } }>(
      { query: FOLLOW, variables: { id: jobId } },
      {
        next: (m) => {
          const now = performance.now();
          const e = m.data?.inferenceEvents;
          if (!e) return end(JSON.stringify(m.errors));
          if (i === 0) sample.push(e);
          f.seqs.push(e.seq);
          f.types.push(e.type);
          if (now >= startedAt) {
            liveDeliveries++;
            if (now < firstLive) firstLive = now;
            lastLive = now;
            if (!firstAt.has(e.seq)) firstAt.set(e.seq, now);
            lastAt.set(e.seq, now);
            lastWall.set(e.seq, Date.now());
          } else if (f.seqs.length === 1) {
            replayed++;
            fanOut.wake();
          }
          if (e.terminal) end();
        },
        error: (err) => end(err instanceof Error ? err.message : JSON.stringify(err)),
        complete: () => end(f.types.length === 0 ? "completed without events" : "completed before the terminal event"),
      },
    );
  });
  const subscribeStart = performance.now();
  await fanOut.until(() => replayed + finished >= subscribers, `${subscribers} subscriptions to replay the created event`);
  const subscribeSeconds = (performance.now() - subscribeStart) / 1000;
  const early = followers.find((f) => f.done);
  if (early) throw new Error(`a subscription ended before the job started: ${early.error ?? "completed"}`);
  startedAt = performance.now();
  const started = await send("PUT", `/inferences/${jobId}/start`, {});
  if (started.status !== 202) throw new Error(`PUT /inferences/${jobId}/start answered ${started.status}: ${JSON.stringify(started.body)}`);
  await fanOut.until(() => finished >= subscribers, `${subscribers} subscriptions to reach the terminal event`);
  await Promise.all(clients.map((c) => c.dispose()));

  // Every subscriber: the same gap-free 1..n, ending in succeeded.
  const n = sample.length;
  const expectedTypes = followers[0]!.types;
  const problems: string[] = [];
  followers.forEach((f, i) => {
    if (f.error) problems.push(`subscriber ${i}: ${f.error}`);
    else if (f.seqs.length !== n || f.seqs.some((s, k) => s !== k + 1)) problems.push(`subscriber ${i}: seqs ${f.seqs.slice(0, 5).join(",")}… (${f.seqs.length} events, expected 1..${n})`);
    else if (f.types.some((t, k) => t !== expectedTypes[k])) problems.push(`subscriber ${i}: other event types than subscriber 0`);
  });
  if (expectedTypes.at(-1) !== "succeeded") problems.push(`the job ended ${expectedTypes.at(-1)}, not succeeded`);
  for (const problem of problems.slice(0, 10)) process.stderr.write(`bench: ${problem}\n`);
  const counts = expectedTypes.reduce<Record<string, number>>((acc, t) => ({ ...acc, [t]: (acc[t] ?? 0) + 1 }), {});
  const liveEvents = n - 1;
  const diffgateRate = liveDeliveries / ((lastLive - firstLive) / 1000);
  const spreads = [...firstAt.keys()].map((s) => lastAt.get(s)! - firstAt.get(s)!);
  const jobEventSeconds = (Math.max(...lastAt.values()) - Math.min(...firstAt.values())) / 1000;
  // Where the time goes: the job's own pace (event times as stored) and the presigned URL every
  // subscriber's copy of a preview event gets (resolved per subscription, signed once per key).
  const events = sample as Array<{ seq: number; type: string; data: Record<string, unknown>; createdAt: string }>;
  const storedAt = (type: string) => Date.parse(events.find((e) => e.type === type)?.createdAt ?? "");
  const jobRunSeconds = (storedAt("succeeded") - storedAt("dispatched")) / 1000;
  const lags = events.filter((e) => lastWall.has(e.seq)).map((e) => lastWall.get(e.seq)! - Date.parse(e.createdAt));
  const previewEvents = events.filter((e) => typeof e.data.previewUrl === "string").length;
  const previewKey = events.map((e) => e.data.previewKey).find((k): k is string => typeof k === "string") ?? `inferences/${jobId}/preview.png`;
  const presignStart = performance.now();
  for (let i = 0; i < 1000; i++) await d.runtime.inferences.presignKey(previewKey);
  const presignMicros = (performance.now() - presignStart) / 1000 * 1000;

  // Baseline: the same frames through a bare ws server to the same layout.
  const frames = sample.slice(1).map((e) => ({ type: "next", payload: { data: { inferenceEvents: e } } }));
  const baseline = await wsBaseline(run, connections, subscribers, frames);
  const meanFrameBytes = frames.reduce((sum, f) => sum + JSON.stringify({ id: "00000000-0000-4000-8000-000000000000", ...f }).length, 0) / Math.max(1, frames.length);
  if (!baseline.complete) problems.push("the baseline's clients did not get every frame in order");

  const results = {
    when: new Date().toISOString(),
    environment: environment(),
    dependencies: d.dependencyNotes,
    diffgateEnv: DIFFGATE_ENV,
    latency: {
      jobs,
      job: JOB,
      doubleStepMs: 0,
      diffgateCreateToSucceededEventMs: { p50: r1(p(diffgateMs, 50)), p99: r1(p(diffgateMs, 99)) },
      baselineDirectTxt2imgMs: { p50: r1(p(directMs, 50)), p99: r1(p(directMs, 99)) },
      addedMs: { p50: r1(p(diffgateMs, 50) - p(directMs, 50)), p99: r1(p(diffgateMs, 99) - p(directMs, 99)) },
      ratio: { p50: r2(ratio(p(diffgateMs, 50), p(directMs, 50))), p99: r2(ratio(p(diffgateMs, 99), p(directMs, 99))) },
      diffgateCreateAnsweredMs: { p50: r1(p(answeredMs, 50)), p99: r1(p(answeredMs, 99)) },
      diffgateCreateToDispatchedEventMs: { p50: r1(p(dispatchedMs, 50)), p99: r1(p(dispatchedMs, 99)) },
    },
    fanout: {
      subscribers,
      connections,
      subscriptionsPerConnection: `${Math.floor(subscribers / connections)}–${Math.ceil(subscribers / connections)}`,
      job: FANOUT_JOB,
      doubleStepMs: FANOUT_STEP_MS,
      subscribeSeconds: r2(subscribeSeconds),
      events: n,
      eventTypes: counts,
      liveEventsPerSubscriber: liveEvents,
      liveDeliveries,
      liveSeconds: r2((lastLive - firstLive) / 1000),
      jobEventsPerSecond: r1(liveEvents / jobEventSeconds),
      nominalJobSeconds: (FANOUT_JOB.steps * FANOUT_STEP_MS) / 1000,
      jobRunSeconds: r2(jobRunSeconds),
      previewEvents,
      presignMicrosPerUrl: Math.round(presignMicros),
      eventToLastSubscriberMs: { p50: r1(p(lags, 50)), p99: r1(p(lags, 99)) },
      diffgateDeliveriesPerSecond: Math.round(diffgateRate),
      perEventFanoutMs: { p50: r1(p(spreads, 50)), p99: r1(p(spreads, 99)), max: r1(Math.max(...spreads)) },
      baselineDeliveries: baseline.deliveries,
      baselineSeconds: r2(baseline.seconds),
      baselineDeliveriesPerSecond: Math.round(baseline.deliveries / baseline.seconds),
      meanFrameBytes: Math.round(meanFrameBytes),
      diffgateOverBaseline: r2(ratio(diffgateRate, baseline.deliveries / baseline.seconds)),
      complete: problems.length === 0,
      problems: problems.slice(0, 20),
    },
  };
  const L = results.latency;
  const F = results.fanout;
  const lines = [
    `latency over ${jobs} jobs (ms, ${JOB.steps} steps ${JOB.width}×${JOB.height}, double stepMs 0)      p50      p99`,
    `  Diffgate: create → succeeded event                       ${String(L.diffgateCreateToSucceededEventMs.p50).padStart(8)} ${String(L.diffgateCreateToSucceededEventMs.p99).padStart(8)}`,
    `  baseline: POST the double's /sdapi/v1/txt2img            ${String(L.baselineDirectTxt2imgMs.p50).padStart(8)} ${String(L.baselineDirectTxt2imgMs.p99).padStart(8)}`,
    `  added by Diffgate                                        ${String(L.addedMs.p50).padStart(8)} ${String(L.addedMs.p99).padStart(8)}`,
    `  ratio                                                    ${String(L.ratio.p50).padStart(8)} ${String(L.ratio.p99).padStart(8)}`,
    `  of which POST /inferences answered                       ${String(L.diffgateCreateAnsweredMs.p50).padStart(8)} ${String(L.diffgateCreateAnsweredMs.p99).padStart(8)}`,
    `  of which create → dispatched event                       ${String(L.diffgateCreateToDispatchedEventMs.p50).padStart(8)} ${String(L.diffgateCreateToDispatchedEventMs.p99).padStart(8)}`,
    `fan-out: ${subscribers} inferenceEvents subscriptions over ${connections} graphql-ws connections (${F.subscriptionsPerConnection} each), one job of ${FANOUT_JOB.steps} steps at ${FANOUT_STEP_MS} ms`,
    `  events ${n} (${Object.entries(counts).map(([t, c]) => `${t} ${c}`).join(", ")}); ${liveEvents} live per subscriber at ${F.jobEventsPerSecond}/s; all subscribed in ${F.subscribeSeconds} s`,
    `  Diffgate:  ${F.diffgateDeliveriesPerSecond} deliveries/s (${liveDeliveries} in ${F.liveSeconds} s); per-event fan-out first→last subscriber p50 ${F.perEventFanoutMs.p50} ms, p99 ${F.perEventFanoutMs.p99} ms`,
    `    event stored → last subscriber p50 ${F.eventToLastSubscriberMs.p50} ms, p99 ${F.eventToLastSubscriberMs.p99} ms; the job ran ${F.jobRunSeconds} s (${F.nominalJobSeconds} s on an idle double); ${previewEvents} events carry a previewUrl, resolved per subscriber at ${F.presignMicrosPerUrl} µs each`,
    `  baseline (bare ws, same frames ≈${F.meanFrameBytes} B, same layout, back to back): ${F.baselineDeliveriesPerSecond} deliveries/s (${baseline.deliveries} in ${F.baselineSeconds} s)`,
    `  Diffgate/baseline ${F.diffgateOverBaseline}; every subscriber got the same gap-free 1..${n}: ${problems.length === 0 ? "yes" : `NO (${problems.length} problems)`}`,
  ];
  process.stdout.write(`${lines.join("\n")}\n`);
  const out = path.join(packageRoot(), "bench", "results", "webui.json");
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`wrote ${out}\n`);
  return problems.length === 0 ? 0 : 1;
}

/**
 * A bare `ws` server in this process sending `frames` (each once per subscription, with that
 * subscription's id, serialized per send as graphql-ws does) to `connections` sockets carrying
 * `subscriptions` subscriptions between them; the clients parse every frame. Deliveries are timed
 * from the first frame a client receives to the last.
 */
async function wsBaseline(run: BenchRun, connections: number, subscriptions: number, frames: object[]): Promise<{ deliveries: number; seconds: number; complete: boolean }> {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await once(wss, "listening");
  run.cleanup("closing the baseline ws server", () => new Promise<void>((resolve) => wss.close(() => resolve())));
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  const accepted: WebSocket[] = [];
  wss.on("connection", (socket) => accepted.push(socket));
  const ids: string[][] = Array.from({ length: connections }, () => []);
  for (let s = 0; s < subscriptions; s++) ids[s % connections]!.push(`sub-${String(s).padStart(8, "0")}-0000-4000-8000-000000000000`.slice(0, 36));

  let deliveries = 0;
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  let inOrder = true;
  const seen = new Map<string, number>();
  let done: (() => void) | undefined;
  const all = new Promise<void>((resolve) => (done = resolve));
  const sockets = await Promise.all(
    Array.from({ length: connections }, async () => {
      const ws = new WebSocket(url);
      ws.on("message", (raw) => {
        const now = performance.now();
        const m = JSON.parse(raw.toString()) as { id: string; payload: { data: { inferenceEvents: { seq: number } } } };
        const seq = m.payload.data.inferenceEvents.seq;
        if (seq !== (seen.get(m.id) ?? 1) + 1) inOrder = false;
        seen.set(m.id, seq);
        deliveries++;
        if (now < first) first = now;
        last = now;
        if (deliveries === frames.length * subscriptions) done?.();
      });
      await once(ws, "open");
      return ws;
    }),
  );
  run.cleanup("closing the baseline ws clients", async () => {
    for (const ws of sockets) ws.terminate();
  });
  while (accepted.length < connections) await nextTurn();
  if (frames.length > 0) {
    for (const frame of frames) {
      accepted.forEach((socket, c) => {
        for (const id of ids[c]!) socket.send(JSON.stringify({ id, ...frame }));
      });
      await nextTurn();
    }
    const timer = setTimeout(() => done?.(), TIMEOUT_MS);
    await all;
    clearTimeout(timer);
  }
  for (const ws of sockets) ws.terminate();
  return { deliveries, seconds: (last - first) / 1000, complete: inOrder && deliveries === frames.length * subscriptions };
}

await runBench(main);
