import { Column, CreateDateColumn, Entity, Index, PrimaryColumn, Unique, UpdateDateColumn } from "typeorm";
import { MERGE_STATUSES, MODEL_STATUSES, TRAINING_STATUSES, type MergeStatus, type ModelStatus, type TrainingStatus } from "../../../domain/trainings.js";

/**
 * Columns shared by the jobs that run one task on an async endpoint (model creation, merge): the
 * payload, the "about to invoke" marker, the invocation's locations and the watch's backoff.
 */
abstract class EndpointTaskColumns {
  @Column({ name: "endpoint_name", type: "varchar", length: 63, nullable: true })
  endpointName!: string | null;

  @Column({ name: "payload_key", type: "text" })
  payloadKey!: string;

  /** Set just before InvokeEndpointAsync: after a crash, the job does not invoke again (docs/architecture.md). */
  @Column({ name: "invoke_attempted_at", type: "timestamptz", nullable: true })
  invokeAttemptedAt!: Date | null;

  @Column({ type: "boolean", default: false })
  invoked!: boolean;

  @Column({ name: "output_location", type: "text", nullable: true })
  outputLocation!: string | null;

  @Column({ name: "failure_location", type: "text", nullable: true })
  failureLocation!: string | null;

  @Column({ name: "output_checks", type: "integer", default: 0 })
  outputChecks!: number;

  @Column({ name: "failure_reason", type: "text", nullable: true })
  failureReason!: string | null;

  @Column({ name: "creator_id", type: "uuid", nullable: true })
  creatorId!: string | null;

  @Column({ name: "allowed_roles", type: "text", array: true, default: () => "'{}'" })
  allowedRoles!: string[];

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @Column({ name: "completed_at", type: "timestamptz", nullable: true })
  completedAt!: Date | null;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  updatedAt!: Date;
}

/** A Dreambooth working model made from a Stable-diffusion checkpoint by the utility endpoint. */
@Entity({ name: "models" })
@Unique("UQ_models_name", ["name"])
@Index("IDX_models_created", ["createdAt", "id"])
export class ModelEntity extends EndpointTaskColumns {
  @PrimaryColumn("uuid")
  id!: string;

  @Column({ type: "varchar", length: 40 })
  name!: string;

  @Column({ name: "model_type", type: "varchar", length: 32 })
  modelType!: string;

  @Column({ type: "enum", enum: MODEL_STATUSES, enumName: "model_status", default: "Initial" })
  status!: ModelStatus;

  /** The source checkpoint (uploaded with the model, or an existing one). */
  @Column({ name: "checkpoint_id", type: "uuid" })
  checkpointId!: string;

  /** Upstream's model `params` (create_model_params …), completed with the source file. */
  @Column({ type: "jsonb", default: () => "'{}'" })
  params!: Record<string, unknown>;

  /** `<type>/model/<name>/<id>/output/`: where the container writes the created model. */
  @Column({ name: "output_prefix", type: "text" })
  outputPrefix!: string;

  /** What the container wrote there, once Complete. */
  @Column({ name: "output_keys", type: "text", array: true, default: () => "'{}'" })
  outputKeys!: string[];

  /** The container's `message` (response, config_dict). */
  @Column({ type: "jsonb", nullable: true })
  result!: Record<string, unknown> | null;
}

/** A SageMaker training job of a model, and the checkpoint it produced. */
@Entity({ name: "trainings" })
@Index("IDX_trainings_created", ["createdAt", "id"])
@Index("IDX_trainings_status", ["status"])
export class TrainingEntity {
  @PrimaryColumn("uuid")
  id!: string;

  /** The output checkpoint's type: Stable-diffusion or Lora. */
  @Column({ name: "train_type", type: "varchar", length: 32 })
  trainType!: string;

  @Column({ name: "model_id", type: "uuid" })
  modelId!: string;

  @Column({ name: "model_name", type: "varchar", length: 40 })
  modelName!: string;

  @Column({ type: "enum", enum: TRAINING_STATUSES, enumName: "training_status", default: "Initial" })
  status!: TrainingStatus;

  /** SageMaker's SecondaryStatus, verbatim. */
  @Column({ name: "secondary_status", type: "varchar", length: 64, nullable: true })
  secondaryStatus!: string | null;

  @Column({ name: "sagemaker_job_name", type: "varchar", length: 63 })
  sagemakerJobName!: string;

  /** CreateTrainingJob went through (or found the job already there). */
  @Column({ name: "job_created", type: "boolean", default: false })
  jobCreated!: boolean;

  /**
   * When CreateTrainingJob was last called. A stop that finds no job yet waits until a call from a
   * worker that died mid-request can no longer land, before it records that nothing was created.
   */
  @Column({ name: "create_attempted_at", type: "timestamptz", nullable: true })
  createAttemptedAt!: Date | null;

  @Column({ name: "instance_type", type: "varchar", length: 32 })
  instanceType!: string;

  /** Upstream's params (training_params, config_params), as sent. */
  @Column({ type: "jsonb", default: () => "'{}'" })
  params!: Record<string, unknown>;

  /** Datasets used, by name, and their prefixes. */
  @Column({ name: "dataset_names", type: "text", array: true, default: () => "'{}'" })
  datasetNames!: string[];

  @Column({ name: "class_dataset_names", type: "text", array: true, default: () => "'{}'" })
  classDatasetNames!: string[];

  /** Files the caller uploads to the input prefix. */
  @Column({ name: "input_files", type: "text", array: true, default: () => "'{}'" })
  inputFiles!: string[];

  @Column({ name: "input_prefix", type: "text" })
  inputPrefix!: string;

  @Column({ name: "output_prefix", type: "text" })
  outputPrefix!: string;

  @Column({ name: "spot", type: "boolean", default: false })
  spot!: boolean;

  @Column({ name: "max_runtime_seconds", type: "integer" })
  maxRuntimeSeconds!: number;

  @Column({ name: "stop_requested", type: "boolean", default: false })
  stopRequested!: boolean;

  /** How many of SageMaker's SecondaryStatusTransitions have been recorded as events. */
  @Column({ name: "transitions_seen", type: "integer", default: 0 })
  transitionsSeen!: number;

  /** The latest epoch/step/loss SageMaker reported. */
  @Column({ type: "jsonb", nullable: true })
  metrics!: Record<string, number> | null;

  @Column({ name: "status_checks", type: "integer", default: 0 })
  statusChecks!: number;

  @Column({ name: "artifact_uri", type: "text", nullable: true })
  artifactUri!: string | null;

  /** The checkpoint registered from the artifact. */
  @Column({ name: "checkpoint_id", type: "uuid", nullable: true })
  checkpointId!: string | null;

  @Column({ name: "failure_reason", type: "text", nullable: true })
  failureReason!: string | null;

  @Column({ name: "creator_id", type: "uuid", nullable: true })
  creatorId!: string | null;

  @Column({ name: "allowed_roles", type: "text", array: true, default: () => "'{}'" })
  allowedRoles!: string[];

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt!: Date;

  @Column({ name: "started_at", type: "timestamptz", nullable: true })
  startedAt!: Date | null;

  @Column({ name: "completed_at", type: "timestamptz", nullable: true })
  completedAt!: Date | null;

  @UpdateDateColumn({ name: "updated_at", type: "timestamptz" })
  updatedAt!: Date;
}

/** A checkpoint merge run on an endpoint; its result becomes a new checkpoint. */
@Entity({ name: "checkpoint_merges" })
@Index("IDX_checkpoint_merges_created", ["createdAt", "id"])
export class MergeEntity extends EndpointTaskColumns {
  @PrimaryColumn("uuid")
  id!: string;

  @Column({ type: "enum", enum: MERGE_STATUSES, enumName: "merge_status", default: "Queued" })
  status!: MergeStatus;

  /** The source checkpoints' ids and file names, in order (primary, secondary, tertiary). */
  @Column({ name: "source_ids", type: "uuid", array: true })
  sourceIds!: string[];

  @Column({ name: "source_names", type: "text", array: true })
  sourceNames!: string[];

  @Column({ type: "varchar", length: 32 })
  method!: string;

  @Column({ type: "double precision" })
  ratio!: number;

  /** The merged file's name (custom_name plus the format's extension). */
  @Column({ name: "result_name", type: "varchar", length: 255 })
  resultName!: string;

  @Column({ type: "jsonb", default: () => "'{}'" })
  options!: Record<string, unknown>;

  @Column({ name: "output_prefix", type: "text" })
  outputPrefix!: string;

  @Column({ name: "checkpoint_id", type: "uuid", nullable: true })
  checkpointId!: string | null;
}
