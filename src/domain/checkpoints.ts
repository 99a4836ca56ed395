/** Checkpoint types, statuses and file-name rules (upstream-contract §3.5, §4.3). */
export const CHECKPOINT_TYPES = ["Stable-diffusion", "embeddings", "Lora", "hypernetworks", "ControlNet", "VAE"] as const;
export type CheckpointType = (typeof CHECKPOINT_TYPES)[number];

/** Upstream's Initial | Active | Disabled, plus Failed for an upload or import that did not arrive. */
export const CHECKPOINT_STATUSES = ["Initial", "Active", "Disabled", "Failed"] as const;
export type CheckpointStatus = (typeof CHECKPOINT_STATUSES)[number];

const TRANSITIONS: Record<CheckpointStatus, readonly CheckpointStatus[]> = {
  Initial: ["Active", "Failed"],
  Active: ["Disabled"],
  Disabled: ["Active"],
  Failed: [],
};

export function canTransition(from: CheckpointStatus, to: CheckpointStatus): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

/** How a checkpoint came to be: uploaded, imported from URLs, produced by a training or a merge. */
export type CheckpointSource = "upload" | "url" | "training" | "merge";

/** Model files (and a Stable-diffusion checkpoint's .yaml). */
export const MODEL_FILE_EXTENSIONS = [".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".yaml"] as const;

/** S3's multipart limits. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const MAX_PART_BYTES = 5 * 1024 * 1024 * 1024;
export const MAX_PARTS = 10_000;

/** Why a file name is refused, or undefined when it is fine. */
export function fileNameProblem(name: string): string | undefined {
  if (name.length === 0) return "must not be empty";
  if (name.length > 255) return "must be at most 255 characters";
  if (/[/\\]/.test(name)) return "must not contain path separators";
  if (name === "." || name === ".." || name.includes("..")) return 'must not contain ".."';
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return "must not contain control characters";
  const lower = name.toLowerCase();
  if (!MODEL_FILE_EXTENSIONS.some((ext) => lower.endsWith(ext) && lower.length > ext.length)) return `must end with one of ${MODEL_FILE_EXTENSIONS.join(" ")}`;
  return undefined;
}

export function extensionOf(name: string): string {
  const lower = name.toLowerCase();
  return MODEL_FILE_EXTENSIONS.find((ext) => lower.endsWith(ext)) ?? "";
}

/** Where a checkpoint's files live in the bucket (upstream's layout). */
export function checkpointPrefix(type: CheckpointType, id: string): string {
  return `${type}/checkpoint/custom/${id}/`;
}
