/** Inference jobs: states and the words upstream's REST shows for them (DESIGN.md "Jobs, states and events"). */
export const INFERENCE_STATUSES = ["CREATED", "QUEUED", "DISPATCHED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"] as const;
export type InferenceStatus = (typeof INFERENCE_STATUSES)[number];

export const FINAL_INFERENCE_STATUSES: readonly InferenceStatus[] = ["SUCCEEDED", "FAILED", "CANCELLED"];

const TRANSITIONS: Record<InferenceStatus, readonly InferenceStatus[]> = {
  CREATED: ["QUEUED", "FAILED", "CANCELLED"],
  QUEUED: ["DISPATCHED", "FAILED", "CANCELLED"],
  DISPATCHED: ["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"],
  RUNNING: ["SUCCEEDED", "FAILED", "CANCELLED"],
  SUCCEEDED: [],
  FAILED: [],
  CANCELLED: [],
};

export function canTransition(from: InferenceStatus, to: InferenceStatus): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

export function isFinal(status: InferenceStatus): boolean {
  return FINAL_INFERENCE_STATUSES.includes(status);
}

/** Upstream's status words (§4.1): created / inprogress / succeed / failed (cancelled is Diffgate's). */
export function upstreamStatus(status: InferenceStatus): string {
  switch (status) {
    case "CREATED":
      return "created";
    case "QUEUED":
    case "DISPATCHED":
    case "RUNNING":
      return "inprogress";
    case "SUCCEEDED":
      return "succeed";
    case "FAILED":
      return "failed";
    case "CANCELLED":
      return "cancelled";
  }
}

/** Object keys of a job (upstream-contract §6.1). */
export function inferenceKeys(task: string, id: string) {
  return {
    params: `${task}/infer_v2/${id}/api_param.json`,
    payload: `${task}/infer_v2/${id}/payload.json`,
    preview: `${task}/infer_v2/${id}/preview.png`,
    resultPrefix: `out/${id}/result/`,
    paramFile: `out/${id}/result/${id}_param.json`,
    image: (n: number) => `out/${id}/result/image_${n}.png`,
  };
}
