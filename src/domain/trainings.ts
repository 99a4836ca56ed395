import { z } from "zod";
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

/** Started and not yet ended: SageMaker may have (or be about to have) the job. */
export const RUNNING_TRAINING: TrainingStatus[] = ["Starting", "Training", "Stopping"];

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

/** How deep upstream's params may nest: theirs nest three levels; thousands overflow the stack of every JSON step after validation. */
export const PARAMS_MAX_DEPTH = 32;
export const PARAMS_MAX_CHARS = 20_000;

/** Depth of a JSON value, counted without recursion (the value may be hostile). */
function jsonDepth(value: unknown, limit: number): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== "object" || v === null) continue;
    deepest = Math.max(deepest, depth + 1);
    if (deepest > limit) return deepest;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return deepest;
}

/** Upstream's `params` objects (models, trainings): bounded in depth first, then in size as JSON. */
export const paramsObject = z
  .record(z.string(), z.unknown(), { error: "must be an object" })
  .refine((o) => jsonDepth(o, PARAMS_MAX_DEPTH) <= PARAMS_MAX_DEPTH, { error: `must nest at most ${PARAMS_MAX_DEPTH} levels deep`, abort: true })
  .refine((o) => JSON.stringify(o).length <= PARAMS_MAX_CHARS, { error: `must be at most ${PARAMS_MAX_CHARS} characters as JSON` });

/** Keys whose values are credentials (create_model_params.new_model_token, hub tokens …): kept for the container, never shown. */
const SECRET_KEY = /token|secret|password|passwd|credential|api_?key/i;

/** A copy of stored params with credential values masked, for answers (depth is bounded by paramsObject). */
export function withoutSecrets(params: Record<string, unknown>): Record<string, unknown> {
  const mask = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(mask);
    if (typeof v !== "object" || v === null) return v;
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, SECRET_KEY.test(k) && typeof x === "string" && x !== "" ? "***" : mask(x)]));
  };
  return mask(params) as Record<string, unknown>;
}

/** `s3://<bucket>/<key>` → the key when the location is in `bucket`, else undefined. */
export function keyInBucket(location: string | null | undefined, bucket: string): string | undefined {
  const m = location ? /^s3:\/\/([^/]+)\/(.+)$/.exec(location) : null;
  return m && m[1] === bucket ? m[2] : undefined;
}

/** A key or prefix as an S3 URI (upstream writes prefixes without their trailing "/"). */
export function bucketUri(bucket: string, key: string): string {
  return `s3://${bucket}/${key.replace(/\/$/, "")}`;
}
