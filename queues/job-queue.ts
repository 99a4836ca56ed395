import { DelayedError, Job, Queue } from "bullmq";
import type { Redis } from "ioredis";
import { WEBUI_QUEUE, WORK_QUEUE, queueOf, type JobName, type JobPayloads, type QueueName } from "./job-types.js";

/** How long a wake mark waits for its job to park; a job that does not park by then did not need it. */
const WAKE_MARK_TTL_MS = 60_000;

/** Producer side: typed enqueueing onto the queue each job name belongs to (job-types.ts). */
export class JobQueue {
  private readonly queues: Record<QueueName, Queue>;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    const open = (name: QueueName) =>
      new Queue(name, {
        connection: redis,
        prefix,
        defaultJobOptions: {
          attempts: 5,
          backoff: { type: "exponential", delay: 1000 },
          removeOnComplete: { age: 24 * 3600, count: 10_000 },
          removeOnFail: { age: 7 * 24 * 3600 },
        },
      });
    this.queues = { [WORK_QUEUE]: open(WORK_QUEUE), [WEBUI_QUEUE]: open(WEBUI_QUEUE) };
  }

  private of(name: JobName): Queue {
    return this.queues[queueOf(name)];
  }

  /** Adding the same `jobId` twice is a no-op while the first is kept, so producers may retry freely. */
  async enqueue<K extends JobName>(name: K, payload: JobPayloads[K], jobId: string): Promise<void> {
    await this.of(name).add(name, payload, { jobId });
  }

  /**
   * Runs a job parked until later (recheckLater) now. A job that is running meanwhile is marked
   * woken, and looks again at once when it parks (so a wake between its look and its parking is not
   * lost). A job that is waiting already or gone is left alone.
   */
  async wake(name: JobName, jobId: string): Promise<void> {
    const queue = this.of(name);
    // The mark first: a job that parks after this sees it; one parked before is promoted below.
    await this.redis.set(this.wakeKey(jobId), "1", "PX", WAKE_MARK_TTL_MS);
    const job = await Job.fromId(queue, jobId);
    if (!job || !(await job.isDelayed())) return;
    const promoted = await job.promote().then(
      () => true,
      () => false, // moved on meanwhile: the mark stays for it
    );
    // Served: the mark would only make its next parking look once more.
    if (promoted) await this.redis.del(this.wakeKey(jobId));
  }

  /**
   * Parks the running job until `delayMs` from now without holding a worker slot (polling a slow
   * state change); BullMQ runs it again then, with the same id and data. A wake that came while it
   * ran makes it run again at once instead.
   */
  async recheckLater(job: Job, token: string | undefined, delayMs: number): Promise<never> {
    await job.moveToDelayed(Date.now() + delayMs, token);
    if (await this.redis.getdel(this.wakeKey(job.id!))) await job.promote().catch(() => undefined);
    throw new DelayedError();
  }

  private wakeKey(jobId: string): string {
    return `${this.prefix}:wake:${jobId}`;
  }

  /**
   * Makes sure a job with this id will run: adds it when absent, retries it when it failed for good,
   * replaces it when it already completed (its record still needs work). A waiting, delayed or active
   * job is left alone.
   */
  async ensure<K extends JobName>(name: K, payload: JobPayloads[K], jobId: string): Promise<void> {
    const job = await this.of(name).getJob(jobId);
    if (!job) return this.enqueue(name, payload, jobId);
    const state = await job.getState();
    if (state === "failed") await job.retry("failed");
    else if (state === "completed") {
      await job.remove();
      await this.enqueue(name, payload, jobId);
    }
  }

  /** Runs `name` every `everyMs` (one schedule however many workers upsert it). */
  async schedule<K extends JobName>(schedulerId: string, name: K, payload: JobPayloads[K], everyMs: number): Promise<void> {
    await this.of(name).upsertJobScheduler(schedulerId, { every: everyMs }, { name, data: payload, opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } } });
  }

  /** Job counts by state, summed over the queues. */
  async depth(): Promise<Record<string, number>> {
    const counts = await Promise.all(Object.values(this.queues).map((q) => q.getJobCounts("waiting", "active", "delayed", "failed", "prioritized", "waiting-children")));
    const total: Record<string, number> = {};
    for (const c of counts) for (const [state, n] of Object.entries(c)) total[state] = (total[state] ?? 0) + n;
    return total;
  }

  async close(): Promise<void> {
    await Promise.all(Object.values(this.queues).map((q) => q.close()));
  }
}
