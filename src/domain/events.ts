/** A stored event of one job's stream. `seq` starts at 1 and has no gaps within a stream. */
export interface StoredEvent {
  streamId: string;
  seq: number;
  type: string;
  data: Record<string, unknown>;
  /** Set on the event after which the stream never grows (the job reached a final state). */
  terminal: boolean;
  createdAt: Date;
}

export interface NewEvent {
  type: string;
  data?: Record<string, unknown>;
  terminal?: boolean;
}

/** Kinds of job that own an event stream, and the permission resource that governs reading them. */
export const STREAM_KINDS = {
  system_check: "user",
  inference: "inference",
  training: "train",
  endpoint: "sagemaker_endpoint",
  checkpoint: "checkpoint",
  model: "train",
  dataset: "train",
  merge: "checkpoint",
  /** A user's own inference events, copied from the jobs' streams (myInferenceEvents). */
  user_inferences: "inference",
} as const;
export type StreamKind = keyof typeof STREAM_KINDS;
