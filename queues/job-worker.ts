import { DelayedError, UnrecoverableError, Worker, type ConnectionOptions, type Job } from "bullmq";
import type { Logger } from "pino";
import { type JobName, type QueueName } from "./job-types.js";
import type { JobQueue } from "./job-queue.js";
import { assertProcessors, type ProcessorResult, type Processors } from "./processor-registry.js";

export interface JobObserver {
  jobFinished(name: string, outcome: "completed" | "failed", seconds: number): void;
}

/**
 * Consumer side: one BullMQ worker over one queue (job-types.ts says which jobs go where),
 * dispatching by job name. A worker killed mid-job leaves the job stalled; BullMQ hands it to
 * another worker, and processors are written to resume rather than repeat (they look at the
 * record's state first). A processor that answers `recheckInMs` is parked until then.
 */
export function startJobWorker(options: {
  queue: QueueName;
  connection: ConnectionOptions;
  prefix: string;
  concurrency: number;
  /** Lock duration and stalled check interval: how soon a dead worker's job goes to another. */
  lockMs: number;
  processors: Record<string, unknown>;
  /** Parks jobs that asked to look again later (and honours wakes that came while they ran). */
  parking: Pick<JobQueue, "recheckLater">;
  log: Logger;
  observer?: JobObserver;
}): Worker {
  const { processors } = options;
  assertProcessors(processors);
  const worker = new Worker(
    options.queue,
    async (job: Job, token?: string) => {
      const processor = (processors as Processors)[job.name as JobName] as ((payload: unknown, job: Job, token: string | undefined) => Promise<ProcessorResult>) | undefined;
      if (!processor) throw new UnrecoverableError(`no processor for job "${job.name}"`);
      const started = performance.now();
      const log = options.log.child({ job: job.name, jobId: job.id, attempt: job.attemptsMade + 1 });
      try {
        const result = await processor(job.data, job, token);
        if (result?.recheckInMs !== undefined) await options.parking.recheckLater(job, token, result.recheckInMs);
        options.observer?.jobFinished(job.name, "completed", (performance.now() - started) / 1000);
        log.debug("job completed");
      } catch (err) {
        if (err instanceof DelayedError) throw err; // parked to look again later, not a failure
        options.observer?.jobFinished(job.name, "failed", (performance.now() - started) / 1000);
        log.warn({ err }, "job failed");
        throw err;
      }
    },
    {
      connection: options.connection,
      prefix: options.prefix,
      concurrency: options.concurrency,
      lockDuration: options.lockMs,
      stalledInterval: options.lockMs,
      maxStalledCount: 3,
      autorun: true,
    },
  );
  worker.on("error", (err) => options.log.error({ err }, "worker error"));
  return worker;
}
