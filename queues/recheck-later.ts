import { DelayedError, type Job } from "bullmq";

/**
 * Parks the running job until `delayMs` from now without holding a worker slot (polling a slow
 * AWS state change). BullMQ runs it again then, with the same id and data.
 */
export async function recheckLater(job: Job, token: string | undefined, delayMs: number): Promise<never> {
  await job.moveToDelayed(Date.now() + delayMs, token);
  throw new DelayedError();
}
