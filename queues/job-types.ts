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
  /** Streams a checkpoint's URLs into the object store; job id `checkpoint-import-<id>`. */
  "checkpoint.import": { checkpointId: string };
  /** Moves a renamed file to its new key. */
  "checkpoint.rename": { checkpointId: string; fileId: string };
  /** Aborts multipart uploads left unfinished too long; repeated by a job scheduler. */
  "checkpoints.housekeeping": Record<string, never>;
  /** Health check of every registered WebUI server; repeated by a job scheduler. */
  "webui.health": Record<string, never>;
  /** Takes an inference through its endpoint's gate and runs it; job id `inference-dispatch-<id>`. */
  "inference.dispatch": { inferenceId: string };
  /** Runs an inference that holds its slot on a WebUI server, to the end; job id `inference-webui-run-<id>`, on the WebUI queue. */
  "inference.webui-run": { inferenceId: string };
  /** Watches an inference's output and failure locations; job id `inference-watch-<id>`. */
  "inference.watch": { inferenceId: string };
  /** Invokes the utility endpoint to create a model and watches its output; job id `model-create-<id>`. */
  "model.create": { modelId: string };
  /** Creates a training's SageMaker job and follows it to the end; job id `training-run-<id>`. */
  "training.run": { trainingId: string };
  /** Re-queues the job of every unfinished inference whose job was lost; repeated by a job scheduler. */
  "inferences.reconcile": Record<string, never>;
  /** Re-queues the job of every unfinished training, model creation and merge whose job was lost; repeated by a job scheduler. */
  "trainings.reconcile": Record<string, never>;
  /** Invokes an endpoint to merge checkpoints and registers the result; job id `merge-run-<id>`. */
  "merge.run": { mergeId: string };
}

export type JobName = keyof JobPayloads;

export const JOB_NAMES = [
  "system.check",
  "endpoint.deploy",
  "endpoint.delete",
  "endpoints.reconcile",
  "checkpoint.import",
  "checkpoint.rename",
  "checkpoints.housekeeping",
  "inference.dispatch",
  "inference.webui-run",
  "inference.watch",
  "inferences.reconcile",
  "webui.health",
  "model.create",
  "training.run",
  "trainings.reconcile",
  "merge.run",
] as const satisfies readonly JobName[];

/** The queue of short jobs (each a few AWS or database calls, or parked until it looks again). */
export const WORK_QUEUE = "work";
/**
 * The queue of WebUI runs: each holds its worker slot while its server generates (seconds to
 * minutes), so they have their own worker and concurrency and never starve the work queue.
 */
export const WEBUI_QUEUE = "webui";
export type QueueName = typeof WORK_QUEUE | typeof WEBUI_QUEUE;

export function queueOf(name: JobName): QueueName {
  return name === "inference.webui-run" ? WEBUI_QUEUE : WORK_QUEUE;
}

export const endpointJobIds = {
  deploy: (endpointId: string) => `endpoint-deploy-${endpointId}`,
  delete: (endpointId: string) => `endpoint-delete-${endpointId}`,
};

export const inferenceJobIds = {
  dispatch: (inferenceId: string) => `inference-dispatch-${inferenceId}`,
  webUiRun: (inferenceId: string) => `inference-webui-run-${inferenceId}`,
  watch: (inferenceId: string) => `inference-watch-${inferenceId}`,
};

export const modelJobIds = {
  create: (modelId: string) => `model-create-${modelId}`,
};

export const trainingJobIds = {
  run: (trainingId: string) => `training-run-${trainingId}`,
};

export const mergeJobIds = {
  run: (mergeId: string) => `merge-run-${mergeId}`,
};
