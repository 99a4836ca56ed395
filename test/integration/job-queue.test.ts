import { randomBytes } from "node:crypto";
import type { Worker } from "bullmq";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobQueue } from "../../queues/job-queue.js";
import { JOB_NAMES } from "../../queues/job-types.js";
import { startJobWorker } from "../../queues/job-worker.js";
import { createRedisConnection } from "../../src/adapters/redis-connection.js";
import { TEST_REDIS_URL } from "../helpers/test-database.js";
import { until } from "../helpers/until.js";

/** Parking and waking against real Redis: a job that asks to look again later, and the wakes that move it. */
describe("JobQueue parking and waking", () => {
  const redis = createRedisConnection(TEST_REDIS_URL, "diffgate-test-job-queue");
  const prefix = `tq${randomBytes(5).toString("hex")}`;
  const queue = new JobQueue(redis, prefix);
  const runs = new Map<string, number>();
  const gates = new Map<string, Promise<void>>();
  const started = new Map<string, () => void>();
  let worker: Worker;

  /** A run of `checkId`: counts itself, waits for the test's gate on its first run, then asks to look again in a minute. */
  async function body(payload: { checkId: string }) {
    const n = (runs.get(payload.checkId) ?? 0) + 1;
    runs.set(payload.checkId, n);
    started.get(payload.checkId)?.();
    if (n === 1) await gates.get(payload.checkId);
    return n === 1 ? { recheckInMs: 60_000 } : undefined;
  }

  beforeAll(() => {
    const processors = Object.fromEntries(JOB_NAMES.map((name) => [name, async () => undefined])) as Record<string, unknown>;
    processors["system.check"] = body;
    worker = startJobWorker({ queue: "work", connection: redis, prefix, concurrency: 4, lockMs: 2000, processors, parking: queue, log: pino({ level: "silent" }) });
  });
  afterAll(async () => {
    await worker?.close();
    await queue.close();
    redis.disconnect();
  });

  /** Enqueues a check whose first run holds until the returned `release` is called. */
  async function held(checkId: string) {
    let release!: () => void;
    gates.set(checkId, new Promise<void>((r) => (release = r)));
    const running = new Promise<void>((r) => started.set(checkId, r));
    await queue.enqueue("system.check", { checkId }, `check-${checkId}`);
    await running;
    return release;
  }

  it("a parked job stays parked for its delay when nobody wakes it", async () => {
    const release = await held("quiet");
    release();
    await new Promise((r) => setTimeout(r, 1000));
    expect(runs.get("quiet")).toBe(1);
  });

  it("a wake that arrives while the job runs (before it parks) is not lost: it looks again at once", async () => {
    const release = await held("raced");
    await queue.wake("system.check", "check-raced"); // it is running: nothing to promote yet
    release(); // now it parks for a minute
    await until("the second run", () => runs.get("raced") === 2, 10_000);
  });

  it("a wake of a parked job runs it at once, and only once", async () => {
    const release = await held("parked");
    release();
    await new Promise((r) => setTimeout(r, 300)); // parked by now
    expect(runs.get("parked")).toBe(1);
    await queue.wake("system.check", "check-parked");
    await until("the second run", () => runs.get("parked") === 2, 10_000);
    await new Promise((r) => setTimeout(r, 500));
    expect(runs.get("parked")).toBe(2);
  });
});
