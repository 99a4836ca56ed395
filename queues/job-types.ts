/**
 * Every job name and its payload. A job's id is chosen by its producer and is deterministic where a
 * retry must not repeat a side effect (the id of the record the job works on).
 */
export interface JobPayloads {
  "system.check": { checkId: string };
}

export type JobName = keyof JobPayloads;

export const JOB_NAMES = ["system.check"] as const satisfies readonly JobName[];

/** The queue that carries jobs which are not tied to one endpoint's capacity. */
export const WORK_QUEUE = "work";
