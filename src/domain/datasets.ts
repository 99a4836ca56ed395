import { uploadedFileNameProblem } from "./file-names.js";

/** Dataset statuses, names and file-name rules (upstream-contract §3.8, §4.6, §10). */

/** Upstream's spelling, kept: `Initialed` until the files are uploaded, then `Enabled` / `Disabled`. */
export const DATASET_STATUSES = ["Initialed", "Enabled", "Disabled"] as const;
export type DatasetStatus = (typeof DATASET_STATUSES)[number];

const TRANSITIONS: Record<DatasetStatus, readonly DatasetStatus[]> = {
  Initialed: ["Enabled"],
  Enabled: ["Disabled"],
  Disabled: ["Enabled"],
};

export function canTransition(from: DatasetStatus, to: DatasetStatus): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

/** Upstream's dataset name rule (1..20). */
export const DATASET_NAME_PATTERN = /^[A-Za-z][A-Za-z0-9_-]*$/;
export const DATASET_NAME_MAX = 20;

/** Training images and their captions/metadata. */
export const DATASET_FILE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".txt", ".caption", ".json"] as const;

/** Why a dataset file name is refused, or undefined when it is fine. */
export function datasetFileNameProblem(name: string): string | undefined {
  return uploadedFileNameProblem(name, DATASET_FILE_EXTENSIONS);
}

/** Where a dataset's files live in the bucket (upstream's layout). */
export function datasetPrefix(name: string): string {
  return `dataset/${name}/`;
}
