import { Column, CreateDateColumn, Entity, Index, PrimaryColumn, UpdateDateColumn } from "typeorm";
import { INFERENCE_STATUSES, type InferenceStatus } from "../../../domain/inferences.js";

/** Used checkpoints of a job, as upstream's `used_models`: `{<type>: [{id, model_name, s3, type}]}`. */
export type UsedModels = Record<string, Array<{ id: string; model_name: string; s3: string; type: string }>>;

/** One inference job. Its objects live under `<task>/infer_v2/<id>/` and `out/<id>/`. */
@Entity({ name: "inferences" })
@Index("IDX_inferences_creator_created", ["creatorId", "createdAt", "id"])
@Index("IDX_inferences_created", ["createdAt", "id"])
@Index("IDX_inferences_endpoint_status", ["endpointId", "status"])
@Index("IDX_inferences_endpoint_queue", ["endpointId", "queuedAt", "id"], { where: `"status" = 'QUEUED'` })
@Index("UQ_inferences_creator_idempotency", ["creatorId", "idempotencyKey"], { unique: true, where: `"idempotency_key" IS NOT NULL` })
export class InferenceEntity {
  @PrimaryColumn("uuid")
  id!: string;

  @Column({ name: "task_type", type: "varchar", length: 32 })
  taskType!: string;

  @Column({ type: "enum", enum: INFERENCE_STATUSES, enumName: "inference_status", default: "CREATED" })
  status!: InferenceStatus;

  @Column({ name: "endpoint_id", type: "uuid" })
  endpointId!: string;

  @Column({ name: "endpoint_name", type: "varchar", length: 63 })
  endpointName!: string;

  @Column({ name: "creator_id", type: "uuid", nullable: true })
  creatorId!: string | null;

  /** The creator's roles at creation (upstream's owner_group_or_role). */
  @Column({ name: "owner_roles", type: "text", array: true, default: () => "'{}'" })
  ownerRoles!: string[];

  @Column({ type: "jsonb", default: () => "'{}'" })
  models!: Record<string, unknown>;

  @Column({ name: "params_key", type: "text" })
  paramsKey!: string;

  @Column({ name: "payload_key", type: "text" })
  payloadKey!: string;

  @Column({ name: "payload_written", type: "boolean", default: false })
  payloadWritten!: boolean;

  /**
   * When the job took one of its endpoint's slots (capacity gate); with QUEUED it counts as in flight,
   * so that two dispatchers never give the same slot away twice.
   */
  @Column({ name: "slot_claimed_at", type: "timestamptz", nullable: true })
  slotClaimedAt!: Date | null;

  /**
   * Set just before the endpoint is called. With `invoked` still false after a crash, the call may or
   * may not have reached the endpoint: the retry looks for evidence before calling again.
   */
  @Column({ name: "invoke_started_at", type: "timestamptz", nullable: true })
  invokeStartedAt!: Date | null;

  @Column({ type: "boolean", default: false })
  invoked!: boolean;

  /** How many times the job was sent to a WebUI server (a lost worker or a retried server failure sends it again). */
  @Column({ name: "run_attempts", type: "integer", default: 0 })
  runAttempts!: number;

  /** The queue position last announced in an event (positions are announced when they change). */
  @Column({ name: "last_position", type: "integer", nullable: true })
  lastPosition!: number | null;

  @Column({ name: "output_location", type: "text", nullable: true })
  outputLocation!: string | null;

  @Column({ name: "failure_location", type: "text", nullable: true })
  failureLocation!: string | null;

  @Column({ name: "image_keys", type: "text", array: true, default: () => "'{}'" })
  imageKeys!: string[];

  @Column({ name: "param_file_key", type: "text", nullable: true })
  paramFileKey!: string | null;

  @Column({ name: "failure_reason", type: "text", nullable: true })
  failureReason!: string | null;

  @Column({ name: "idempotency_key", type: "varchar", length: 255, nullable: true })
  idempotencyKey!: string | null;

  @Column({ name: "request_hash", type: "varchar", length: 64, nullable: true })
  requestHash!: string | null;

  /** sha256 of the job's progress-callback token. */
  @Column({ name: "progress_token_hash", type: "varchar", length: 64, nullable: true })
  progressTokenHash!: string | null;

  @Column({ name: "last_step", type: "integer", default: 0 })
  lastStep!: number;

  @Column({ name: "total_steps", type: "integer", nullable: true })
  totalSteps!: number | null;

  @Column({ name: "preview_key", type: "text", nullable: true })
  previewKey!: string | null;

  @Column({ name: "cancel_requested", type: "boolean", default: false })
  cancelRequested!: boolean;

  /** How many times the watch job has looked for the output, for its backoff. */
  @Column({ name: "output_checks", type: "integer", default: 0 })
  outputChecks!: number;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @Column({ name: "queued_at", type: "timestamptz", nullable: true })
  queuedAt!: Date | null;

  @Column({ name: "dispatched_at", type: "timestamptz", nullable: true })
  dispatchedAt!: Date | null;

  @Column({ name: "completed_at", type: "timestamptz", nullable: true })
  completedAt!: Date | null;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  updatedAt!: Date;
}
