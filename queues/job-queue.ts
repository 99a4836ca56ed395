import { Job, Queue, type ConnectionOptions } from "bullmq";
import { WEBUI_QUEUE, WORK_QUEUE, queueOf, type JobName, type JobPayloads, type QueueName } from "./job-types.js";

/** Producer side: typed enqueueing onto the queue each job name belongs to (job-types.ts). */
export class JobQueue {
  private readonly queues: Record<QueueName, Queue>;

  constructor(connection: ConnectionOptions, prefix: string) {
    const open = (name: QueueName) =>
      new Queue(name, {
        connection,
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
   * Runs a job parked until later (recheckLater) now. A job that is not parked (running, waiting,
   * gone) is left alone: it is already on its way, or has nothing left to do.
   */
  async wake(name: JobName, jobId: string): Promise<void> {
    const job = await Job.fromId(this.of(name), jobId);
    if (!job || !(await job.isDelayed())) return;
    await job.promote().catch(() => undefined); // moved on meanwhile
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
