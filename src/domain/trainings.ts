import { uploadedFileNameProblem } from "./file-names.js";

/** Models (Dreambooth working models), trainings and checkpoint merges: statuses and rules (upstream-contract §4.4, §4.5, §9, §11). */

/** Upstream's model-creation statuses (§4.4). */
export const MODEL_STATUSES = ["Initial", "Creating", "Complete", "Fail"] as const;
export type ModelStatus = (typeof MODEL_STATUSES)[number];

const MODEL_TRANSITIONS: Record<ModelStatus, readonly ModelStatus[]> = {
  Initial: ["Creating", "Fail"],
  Creating: ["Complete", "Fail"],
  Complete: [],
  Fail: [],
};

export function canModelTransition(from: ModelStatus, to: ModelStatus): boolean {
  return from === to || MODEL_TRANSITIONS[from].includes(to);
}

export const isFinalModel = (s: ModelStatus) => s === "Complete" || s === "Fail";

/**
 * Training statuses: upstream's `Initial`, `Training`, `Complete`, `Fail`, `Stopped` (§4.5) plus
 * `Starting` (start accepted, CreateTrainingJob not yet confirmed) and `Stopping` (StopTrainingJob
 * sent, SageMaker not yet Stopped). SageMaker's SecondaryStatus is kept beside it, not in it.
 */
export const TRAINING_STATUSES = ["Initial", "Starting", "Training", "Stopping", "Complete", "Fail", "Stopped"] as const;
export type TrainingStatus = (typeof TRAINING_STATUSES)[number];

const TRAINING_TRANSITIONS: Record<TrainingStatus, readonly TrainingStatus[]> = {
  Initial: ["Starting", "Stopped"],
  Starting: ["Training", "Fail", "Stopped"],
  Training: ["Stopping", "Complete", "Fail", "Stopped"],
  // A stop that raced with the end: SageMaker's final word wins.
  Stopping: ["Stopped", "Complete", "Fail"],
  Complete: [],
  Fail: [],
  Stopped: [],
};

export function canTrainingTransition(from: TrainingStatus, to: TrainingStatus): boolean {
  return from === to || TRAINING_TRANSITIONS[from].includes(to);
}

export const isFinalTraining = (s: TrainingStatus) => s === "Complete" || s === "Fail" || s === "Stopped";

/** Checkpoint merges: queued, sent to the endpoint, then Complete or Fail. */
export const MERGE_STATUSES = ["Queued", "Merging", "Complete", "Fail"] as const;
export type MergeStatus = (typeof MERGE_STATUSES)[number];

const MERGE_TRANSITIONS: Record<MergeStatus, readonly MergeStatus[]> = {
  Queued: ["Merging", "Complete", "Fail"],
  Merging: ["Complete", "Fail"],
  Complete: [],
  Fail: [],
};

export function canMergeTransition(from: MergeStatus, to: MergeStatus): boolean {
  return from === to || MERGE_TRANSITIONS[from].includes(to);
}

/** The WebUI checkpoint merger's methods; "Add difference" needs a third (tertiary) model. */
export const MERGE_METHODS = ["Weighted sum", "Add difference", "No interpolation"] as const;
export type MergeMethod = (typeof MERGE_METHODS)[number];
export const MERGE_FORMATS = ["safetensors", "ckpt"] as const;

/** Model and merge names: upstream's name rule (a letter, then letters, digits, _ or -). */
export const MODEL_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_-]*$/;
export const MODEL_NAME_MAX = 40;

/** Kinds of training: the output checkpoint's type. */
export const TRAIN_TYPES = ["Stable-diffusion", "Lora"] as const;
export type TrainType = (typeof TRAIN_TYPES)[number];

/** Files a training's input may hold (the client's tars of data, class data and configuration). */
export const TRAINING_INPUT_EXTENSIONS = [".tar", ".tar.gz", ".tgz", ".zip", ".json", ".yaml"] as const;

/** Why a training input file name is refused, or undefined when it is fine. */
export function trainingInputNameProblem(name: string): string | undefined {
  return uploadedFileNameProblem(name, TRAINING_INPUT_EXTENSIONS);
}

/** Object layout (upstream-contract §6.1). Prefixes end in "/". */
export const modelKeys = (type: string, name: string, id: string) => ({
  base: `${type}/model/${name}/${id}/`,
  output: `${type}/model/${name}/${id}/output/`,
  payload: `${type}/model/${name}/${id}/payload.json`,
});

export const trainingKeys = (type: string, modelName: string, id: string) => ({
  base: `${type}/train/${modelName}/${id}/`,
  input: `${type}/train/${modelName}/${id}/input/`,
  output: `${type}/train/${modelName}/${id}/output/`,
  checkpoints: `${type}/train/${modelName}/${id}/spot-checkpoints/`,
});

export const mergeKeys = (id: string) => ({
  base: `merge/${id}/`,
  output: `merge/${id}/output/`,
  payload: `merge/${id}/payload.json`,
});

/**
 * The SageMaker training job name of a training: deterministic, so that starting twice or a
 * retried worker finds the job it already created. `<model name>-<training id without dashes>`,
 * within SageMaker's 63 characters and pattern.
 */
export function trainingJobName(modelName: string, trainingId: string): string {
  const stem = modelName.replace(/_/g, "-").replace(/[^A-Za-z0-9-]/g, "").replace(/^-+/, "").slice(0, 30).replace(/-+$/, "");
  const id = trainingId.replace(/-/g, "");
  return stem ? `${stem}-${id}` : `training-${id}`;
}
