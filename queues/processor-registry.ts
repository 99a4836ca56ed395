import type { Job } from "bullmq";
import { JOB_NAMES, type JobName, type JobPayloads } from "./job-types.js";

/** What a job body may answer: nothing (done), or when to look again (the worker parks the job until then). */
export type ProcessorResult = void | { recheckInMs?: number };
export type Processor<K extends JobName> = (payload: JobPayloads[K], job: Job<JobPayloads[K], unknown, K>, token: string | undefined) => Promise<ProcessorResult>;
export type Processors = { [K in JobName]: Processor<K> };

/** Fails the start when a job name has no processor or a processor has no job name. */
export function assertProcessors(processors: Record<string, unknown>): asserts processors is Processors {
  const names = new Set<string>(JOB_NAMES);
  const missing = JOB_NAMES.filter((n) => typeof processors[n] !== "function");
  const unknown = Object.keys(processors).filter((n) => !names.has(n));
  if (missing.length || unknown.length) {
    throw new Error(
      [missing.length ? `no processor for job(s): ${missing.join(", ")}` : "", unknown.length ? `processor(s) for unknown job(s): ${unknown.join(", ")}` : ""]
        .filter(Boolean)
        .join("; "),
    );
  }
}
