/**
 * Every job name and its payload. A job's id is chosen by its producer and is deterministic where a
 * retry must not repeat a side effect (the id of the record the job works on).
 */
export interface JobPayloads {
  "system.check": { checkId: string };
  /** Walks one endpoint from Creating to InService or Failed; job id `endpoint-deploy-<id>`. */
  "endpoint.deploy": { endpointId: string };
  /** Walks one endpoint from Deleting to Deleted; job id `endpoint-delete-<id>`. */
  "endpoint.delete": { endpointId: string };
  /** Compares live endpoints with SageMaker and records drift; repeated by a job scheduler. */
  "endpoints.reconcile": Record<string, never>;
}

export type JobName = keyof JobPayloads;

export const JOB_NAMES = ["system.check", "endpoint.deploy", "endpoint.delete", "endpoints.reconcile"] as const satisfies readonly JobName[];

/** The queue that carries jobs which are not tied to one endpoint's capacity. */
export const WORK_QUEUE = "work";

export const endpointJobIds = {
  deploy: (endpointId: string) => `endpoint-deploy-${endpointId}`,
  delete: (endpointId: string) => `endpoint-delete-${endpointId}`,
};
