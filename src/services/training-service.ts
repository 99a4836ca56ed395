import { randomUUID } from "node:crypto";
import type { CreateTrainingJobCommandInput } from "@aws-sdk/client-sagemaker";
import type { Logger } from "pino";
import { In, type DataSource, type EntityManager } from "typeorm";
import { z } from "zod";
import { trainingJobIds } from "../../queues/job-types.js";
import type { JobQueue } from "../../queues/job-queue.js";
import { CheckpointEntity } from "../adapters/db/entities/checkpoint.entity.js";
import { DatasetEntity } from "../adapters/db/entities/dataset.entity.js";
import { ModelEntity, TrainingEntity } from "../adapters/db/entities/training.entity.js";
import { SageMakerRequestError } from "../adapters/sagemaker/endpoint-provisioner.js";
import type { Trainer, TrainingDescription } from "../adapters/sagemaker/trainer.js";
import type { ObjectStore } from "../adapters/storage/object-store.js";
import { datasetPrefix } from "../domain/datasets.js";
import { DomainError } from "../domain/errors.js";
import type { StoredEvent } from "../domain/events.js";
import { nameBasedUuid } from "../domain/name-uuid.js";
import { assertMayChange, visibleToCaller } from "../domain/ownership.js";
import type { Principal } from "../domain/principal.js";
import {
  RUNNING_TRAINING,
  TRAIN_TYPES,
  TRAINING_STATUSES,
  bucketUri,
  canTrainingTransition,
  isFinalTraining,
  keyInBucket,
  paramsObject,
  trainingInputNameProblem,
  trainingJobName,
  trainingKeys,
  withoutSecrets,
  type TrainingStatus,
} from "../domain/trainings.js";
import { parseInput } from "../domain/validation.js";
import type { EventLog, EventRecorder } from "./event-log.js";
import { CheckpointNameTaken, UnusableArtifact, type ProducedCheckpoints } from "./produced-checkpoints.js";

/**
 * How long after a CreateTrainingJob call it may still land (a request sent by a worker that died
 * before the answer came): SageMaker acts on a request it received within seconds, and the SDK gives
 * up on one well within this.
 */
const CREATE_SETTLE_MS = 60_000;

export interface TrainingSettings {
  bucket: string;
  region: string;
  image: string | undefined;
  roleArn: string | undefined;
  instanceTypes: string[];
  maxRuntimeSeconds: number;
  maxWaitSeconds: number;
  volumeSizeGb: number;
  watchInitialMs: number;
  uploadUrlTtlSeconds: number;
}

export interface TrainingView {
  id: string;
  trainType: string;
  modelId: string;
  modelName: string;
  status: TrainingStatus;
  secondaryStatus: string | null;
  sagemakerJobName: string;
  instanceType: string;
  params: Record<string, unknown>;
  datasets: string[];
  classDatasets: string[];
  inputFiles: string[];
  inputLocation: string;
  outputLocation: string;
  spot: boolean;
  metrics: Record<string, number> | null;
  artifactUri: string | null;
  checkpointId: string | null;
  failureReason: string | null;
  creator: string | null;
  creatorId: string | null;
  createdAt: Date;
  startedAt: Date | null;
  completedAt: Date | null;
}

export interface TrainingUploadUrl {
  filename: string;
  key: string;
  url: string;
}

const idSchema = z.uuid({ error: "must be a training id (a UUID)" });
const datasetRef = z.string({ error: "must be a dataset name or s3://<bucket>/dataset/<name>" }).max(1024);

const createSchema = z
  .object({
    trainType: z.enum(TRAIN_TYPES, { error: `must be one of ${TRAIN_TYPES.join(", ")}` }),
    modelId: z.uuid({ error: "must be a model id (a UUID)" }),
    params: paramsObject.optional(),
    datasets: z.array(datasetRef, { error: "must be a list of datasets" }).max(10, { error: "at most 10 datasets" }).optional(),
    classDatasets: z.array(datasetRef, { error: "must be a list of datasets" }).max(10, { error: "at most 10 datasets" }).optional(),
    filenames: z
      .array(
        z.string({ error: "must be a file name" }).superRefine((name, ctx) => {
          const problem = trainingInputNameProblem(name);
          if (problem) ctx.addIssue({ code: "custom", message: problem });
        }),
        { error: "must be a list of file names" },
      )
      .max(20, { error: "at most 20 files" })
      .optional(),
    instanceType: z.string({ error: "must be an instance type" }).max(64).optional(),
    spot: z.boolean({ error: "must be true or false" }).optional(),
    creator: z.string({ error: "must be a user name" }).max(128).optional(),
  })
  .strict();

const listSchema = z
  .object({
    statuses: z.array(z.enum(TRAINING_STATUSES, { error: `must be one of ${TRAINING_STATUSES.join(", ")}` })).max(TRAINING_STATUSES.length * 2, { error: "too many statuses" }).optional(),
    types: z.array(z.enum(TRAIN_TYPES, { error: `must be one of ${TRAIN_TYPES.join(", ")}` })).max(TRAIN_TYPES.length * 2, { error: "too many types" }).optional(),
  })
  .strict();

/** JSON → base64 outside China, plain JSON in cn-* regions (upstream §9). */
function hyperParameter(value: unknown, region: string): string {
  const json = JSON.stringify(value);
  return region.startsWith("cn-") ? json : Buffer.from(json, "utf8").toString("base64");
}

/**
 * Trainings: created from a Complete model with datasets and/or uploaded input files, started as a
 * SageMaker training job whose name is derived from the training's id (so no retry ever makes a
 * second one), followed through DescribeTrainingJob with backoff (every SecondaryStatusTransition
 * an event), stopped with StopTrainingJob, and on completion the artifact becomes an Active
 * checkpoint of the caller.
 */
export class TrainingService {
  constructor(
    private readonly db: DataSource,
    private readonly events: EventLog,
    private readonly queue: JobQueue,
    private readonly store: ObjectStore,
    private readonly trainer: Trainer,
    private readonly produced: ProducedCheckpoints,
    private readonly settings: TrainingSettings,
    private readonly log: Logger,
  ) {}

  private uri(key: string): string {
    return bucketUri(this.settings.bucket, key);
  }

  private get defaultInstanceType(): string {
    return this.settings.instanceTypes.includes("ml.g4dn.2xlarge") ? "ml.g4dn.2xlarge" : this.settings.instanceTypes[0]!;
  }

  /** Creates an Initial training; the answer carries one presigned PUT per input file. */
  async create(principal: Principal, input: unknown): Promise<{ training: TrainingView; uploads: TrainingUploadUrl[] }> {
    const v = parseInput(createSchema, input);
    if (v.creator !== undefined && v.creator !== principal.username) {
      throw DomainError.forbidden(`creator "${v.creator}" must be the calling user "${principal.username}"; identities are taken from credentials, not from the body`);
    }
    if (!principal.permissions.allows("train", "create")) throw DomainError.forbidden(`user "${principal.username}" has not permission to create a train job (needs train:create or train:all)`);
    const instanceType = v.instanceType ?? this.defaultInstanceType;
    if (!this.settings.instanceTypes.includes(instanceType)) {
      throw DomainError.badInput(`instanceType: ${instanceType} is not allowed here; use one of ${this.settings.instanceTypes.join(", ")} (TRAINING_INSTANCE_TYPES)`, "instanceType");
    }
    const filenames = v.filenames ?? [];
    const duplicate = filenames.find((n, i) => filenames.indexOf(n) !== i);
    if (duplicate) throw DomainError.badInput(`filenames: ${duplicate} is listed twice`, "filenames");

    const model = await this.usableModel(principal, v.modelId);
    const datasets = await this.usableDatasets(principal, v.datasets ?? [], "datasets");
    const classDatasets = await this.usableDatasets(principal, v.classDatasets ?? [], "classDatasets");
    if (datasets.length === 0 && filenames.length === 0) throw DomainError.badInput("datasets: a training needs data: name at least one Enabled dataset, or files to upload (filenames)", "datasets");

    const params = structuredClone(v.params ?? {}) as Record<string, unknown>;
    const configParams = (params.config_params ?? {}) as Record<string, unknown>;
    const outputType = v.trainType === "Lora" || configParams.use_lora === true ? "Lora" : "Stable-diffusion";
    const id = randomUUID();
    const keys = trainingKeys(outputType, model.name, id);
    const trainingParams = (typeof params.training_params === "object" && params.training_params !== null ? params.training_params : {}) as Record<string, unknown>;
    params.training_params = {
      ...trainingParams,
      model_name: model.name,
      model_type: model.modelType,
      s3_model_path: this.uri(model.outputPrefix),
      data_tar_list: datasets.map((d) => this.uri(datasetPrefix(d.name))),
      class_data_tar_list: classDatasets.map((d) => this.uri(datasetPrefix(d.name))),
      training_instance_type: instanceType,
    };
    const spot = v.spot ?? false;
    // SageMaker refuses hyperparameter values above 2500 characters: say so now, not at start.
    const encoded = hyperParameter(params, this.settings.region);
    if (encoded.length > 2500) throw DomainError.badInput(`params: ${encoded.length} characters once encoded as a hyperparameter; SageMaker allows 2500 — shorten config_params or put the configuration in an uploaded file`, "params");

    await this.events.transaction(async (tx, events) => {
      await tx.insert(TrainingEntity, {
        id,
        trainType: outputType,
        modelId: model.id,
        modelName: model.name,
        status: "Initial",
        sagemakerJobName: trainingJobName(model.name, id),
        instanceType,
        params: params as Record<string, never>,
        datasetNames: datasets.map((d) => d.name),
        classDatasetNames: classDatasets.map((d) => d.name),
        inputFiles: filenames,
        inputPrefix: keys.input,
        outputPrefix: keys.output,
        spot,
        maxRuntimeSeconds: this.settings.maxRuntimeSeconds,
        creatorId: principal.userId,
        allowedRoles: principal.roles,
      });
      await events.openStream(id, "training", principal.userId);
      await events.append(id, { type: "status", data: { status: "Initial", modelId: model.id, trainType: outputType, instanceType, datasets: datasets.map((d) => d.name) } });
    });
    const uploads = await Promise.all(filenames.map(async (f) => ({ filename: f, key: `${keys.input}${f}`, url: await this.store.presignPut(`${keys.input}${f}`, this.settings.uploadUrlTtlSeconds) })));
    return { training: await this.view(principal, id), uploads };
  }

  private async usableModel(principal: Principal, modelId: string): Promise<ModelEntity> {
    const vis = visibleToCaller(principal, "train", "m");
    const model = await this.db.getRepository(ModelEntity).createQueryBuilder("m").where("m.id = :id", { id: modelId }).andWhere(vis.sql, vis.params).getOne();
    if (!model) throw DomainError.notFound(`model with id ${modelId} is not found`);
    if (model.status !== "Complete") throw DomainError.badInput(`modelId: model ${modelId} is in ${model.status} state, not valid to be used for train (it must be Complete)`, "modelId");
    return model;
  }

  private async usableDatasets(principal: Principal, refs: string[], field: string): Promise<DatasetEntity[]> {
    const names: string[] = [];
    refs.forEach((ref, i) => {
      if (ref.trim() === "") return; // the seed's class_data_tar_list: [""]
      let name = ref;
      if (ref.startsWith("s3://")) {
        const m = /^s3:\/\/([^/]+)\/dataset\/([^/]+)\/?$/.exec(ref);
        if (!m || m[1] !== this.settings.bucket) throw DomainError.badInput(`${field}.${i}: ${ref} is not a dataset of this deployment (s3://${this.settings.bucket}/dataset/<name>)`, `${field}.${i}`);
        name = m[2]!;
      }
      if (!/^[A-Za-z][A-Za-z0-9_-]{0,19}$/.test(name)) throw DomainError.badInput(`${field}.${i}: ${JSON.stringify(name)} is not a dataset name`, `${field}.${i}`);
      if (!names.includes(name)) names.push(name);
    });
    if (!names.length) return [];
    const vis = visibleToCaller(principal, "train", "d");
    const found = await this.db.getRepository(DatasetEntity).createQueryBuilder("d").where("d.name IN (:...names)", { names }).andWhere(vis.sql, vis.params).getMany();
    return names.map((n) => {
      const d = found.find((f) => f.name === n);
      const i = refs.findIndex((r) => r === n || r.replace(/\/$/, "").endsWith(`/dataset/${n}`));
      if (!d) throw DomainError.badInput(`${field}.${i}: dataset ${n} is not found (or not shared with you)`, `${field}.${i}`);
      if (d.status !== "Enabled") throw DomainError.badInput(`${field}.${i}: dataset ${n} is ${d.status}; only Enabled datasets can be used for training`, `${field}.${i}`);
      return d;
    });
  }

  /** Starts an Initial training once its input files are uploaded; starting again is harmless. */
  async start(principal: Principal, id: unknown): Promise<TrainingView> {
    const t = await this.writable(principal, parseInput(idSchema, id, "id"));
    if (t.status !== "Initial") return this.view(principal, t.id);
    if (!this.settings.image || !this.settings.roleArn) {
      throw DomainError.conflict("training is not configured on this deployment: set TRAINING_IMAGE_URI and TRAINING_ROLE_ARN (or SAGEMAKER_EXECUTION_ROLE_ARN)");
    }
    const missing: string[] = [];
    for (const f of t.inputFiles) if (!(await this.store.head(`${t.inputPrefix}${f}`))) missing.push(f);
    if (missing.length) throw DomainError.conflict(`training ${t.id} cannot start: ${missing.length} input file(s) not uploaded yet: ${missing.join(", ")}`, "filenames");
    const started = await this.events.transaction(async (tx, events) => {
      // The model's output is the training's input: held (shared lock) so that it cannot be deleted until the training runs, when deleteModels sees it.
      const model = await tx.getRepository(ModelEntity).createQueryBuilder("m").setLock("pessimistic_read").where("m.id = :id", { id: t.modelId }).getOne();
      if (model?.status !== "Complete") throw DomainError.conflict(`training ${t.id} cannot start: its model ${t.modelName} was deleted`, "modelId");
      return this.transitionIn(tx, events, t.id, "Starting", {}, { instanceType: t.instanceType, sagemakerJobName: t.sagemakerJobName }, "starting");
    });
    if (started) await this.queue.enqueue("training.run", { trainingId: t.id }, trainingJobIds.run(t.id));
    return this.view(principal, t.id);
  }

  /** Stops: before SageMaker has the job, nothing is created; after, StopTrainingJob. */
  async stop(principal: Principal, id: unknown): Promise<TrainingView> {
    const t = await this.writable(principal, parseInput(idSchema, id, "id"));
    if (t.status === "Initial") {
      await this.transition(t.id, "Stopped", { completedAt: new Date(), stopRequested: true }, { reason: "stopped before it was started", requestedBy: principal.username }, "stopped");
    } else if (t.status === "Starting") {
      // The run job sees the flag: before CreateTrainingJob it stops without creating, after it calls StopTrainingJob.
      await this.db.getRepository(TrainingEntity).update({ id: t.id }, { stopRequested: true });
      const now = await this.load(t.id);
      if (now?.status === "Training") await this.stopRunning(now, principal.username);
    } else if (t.status === "Training") {
      await this.stopRunning(t, principal.username);
    }
    return this.view(principal, t.id);
  }

  private async stopRunning(t: TrainingEntity, requestedBy: string): Promise<void> {
    try {
      const outcome = await this.trainer.stop(t.sagemakerJobName);
      if (outcome === "ended") return;
    } catch (e) {
      if (e instanceof SageMakerRequestError) throw DomainError.conflict(`SageMaker refused to stop ${t.sagemakerJobName}: ${e.message}`);
      // Throttled, or SageMaker unreachable: the stop stays requested and the run job asks again.
      if ((e as { $metadata?: unknown }).$metadata !== undefined) {
        await this.db.getRepository(TrainingEntity).update({ id: t.id }, { stopRequested: true });
        throw DomainError.unavailable(`SageMaker did not take the stop of ${t.sagemakerJobName} now (${(e as Error).name}); it is asked again shortly`);
      }
      throw e;
    }
    await this.transition(t.id, "Stopping", { stopRequested: true }, { requestedBy }, "stopping");
  }

  /**
   * Deletes finished or never-started trainings (all or none): their rows, then their own objects;
   * models and produced checkpoints stay. Checked again under the rows' locks, so a training started
   * since the request was read is refused, never deleted under its SageMaker job.
   */
  async delete(principal: Principal, ids: unknown): Promise<string[]> {
    const list = [...new Set(parseInput(z.array(idSchema, { error: "must be a list of training ids" }).min(1, { error: "must name at least one training" }).max(100, { error: "at most 100 at once" }), ids, "ids"))];
    await Promise.all(list.map((id) => this.writable(principal, id)));
    const deleted = await this.events.transaction(async (tx, events) => {
      const trainings = await tx.getRepository(TrainingEntity).createQueryBuilder("t").setLock("pessimistic_write").where("t.id IN (:...ids)", { ids: list }).orderBy("t.id").getMany();
      const running = trainings.filter((t) => RUNNING_TRAINING.includes(t.status));
      if (running.length) throw DomainError.conflict(`training(s) ${running.map((t) => t.id).join(", ")} are running; stop them first`, "ids");
      for (const t of trainings) {
        await tx.delete(TrainingEntity, { id: t.id });
        if (!isFinalTraining(t.status)) await events.append(t.id, { type: "status", data: { status: "Deleted", previous: t.status }, terminal: true });
      }
      return trainings;
    });
    for (const t of deleted) await this.store.deletePrefix(trainingKeys(t.trainType, t.modelName, t.id).base);
    return list;
  }

  // ---------------------------------------------------------------- the run job

  private request(t: TrainingEntity): CreateTrainingJobCommandInput {
    const s = this.settings;
    const model = (t.params.training_params as Record<string, unknown> | undefined)?.s3_model_path;
    const channel = (name: string, s3Uri: string) => ({ ChannelName: name, DataSource: { S3DataSource: { S3DataType: "S3Prefix" as const, S3Uri: `${s3Uri}/`, S3DataDistributionType: "FullyReplicated" as const } } });
    const channels = [
      ...(typeof model === "string" ? [channel("model", model)] : []),
      ...t.datasetNames.map((n, i) => channel(`dataset-${i}`, this.uri(datasetPrefix(n)))),
      ...t.classDatasetNames.map((n, i) => channel(`class-${i}`, this.uri(datasetPrefix(n)))),
      ...(t.inputFiles.length ? [channel("input", this.uri(t.inputPrefix))] : []),
    ];
    return {
      TrainingJobName: t.sagemakerJobName,
      RoleArn: s.roleArn!,
      AlgorithmSpecification: { TrainingImage: s.image!, TrainingInputMode: "File" },
      HyperParameters: {
        sagemaker_program: hyperParameter("extensions/sd-webui-sagemaker/sagemaker_entrypoint_json.py", s.region),
        params: hyperParameter(t.params, s.region),
        "s3-input-path": hyperParameter(this.uri(t.inputPrefix), s.region),
        "s3-output-path": hyperParameter(this.uri(t.outputPrefix), s.region),
      },
      ...(channels.length ? { InputDataConfig: channels } : {}),
      OutputDataConfig: { S3OutputPath: this.uri(t.outputPrefix) },
      ResourceConfig: { InstanceType: t.instanceType as never, InstanceCount: 1, VolumeSizeInGB: s.volumeSizeGb },
      StoppingCondition: { MaxRuntimeInSeconds: t.maxRuntimeSeconds, ...(t.spot ? { MaxWaitTimeInSeconds: Math.max(s.maxWaitSeconds, t.maxRuntimeSeconds) } : {}) },
      ...(t.spot ? { EnableManagedSpotTraining: true, CheckpointConfig: { S3Uri: this.uri(trainingKeys(t.trainType, t.modelName, t.id).checkpoints) } } : {}),
      Tags: [{ Key: "diffgate:training-id", Value: t.id }],
    };
  }

  /**
   * One pass of the run job: creates the SageMaker job (once: its name is deterministic, and an
   * existing one counts as created), records what DescribeTrainingJob shows, and on the end
   * registers the artifact or keeps the reason. Asks to look again later while it runs.
   */
  async run(id: string): Promise<{ recheckInMs?: number }> {
    let t = await this.load(id);
    if (!t || isFinalTraining(t.status) || t.status === "Initial") return {};
    if (t.status === "Starting") {
      // A worker that died inside CreateTrainingJob may have created the job without recording it:
      // SageMaker is asked before a stop is taken as "nothing was created".
      if (t.stopRequested && !t.jobCreated && !(await this.trainer.describe(t.sagemakerJobName))) {
        if (t.createAttemptedAt && Date.now() - t.createAttemptedAt.getTime() < CREATE_SETTLE_MS) return { recheckInMs: 1000 };
        await this.transition(id, "Stopped", { completedAt: new Date() }, { reason: "stopped before the SageMaker training job was created" }, "stopped");
        return {};
      }
      if (t.stopRequested && !t.jobCreated) {
        this.log.info({ trainingId: id, job: t.sagemakerJobName }, "stop requested, but a lost CreateTrainingJob went through: stopping the job");
        await this.db.getRepository(TrainingEntity).update({ id }, { jobCreated: true });
        t.jobCreated = true;
      }
      if (!t.jobCreated) {
        await this.db.getRepository(TrainingEntity).update({ id }, { createAttemptedAt: new Date() });
        try {
          const outcome = await this.trainer.create(this.request(t));
          if (outcome === "existed" && !(await this.trainer.describe(t.sagemakerJobName))) throw new Error(`CreateTrainingJob says ${t.sagemakerJobName} exists, but DescribeTrainingJob does not find it`);
          this.log.info({ trainingId: id, job: t.sagemakerJobName, outcome }, "training job created");
        } catch (e) {
          if (!(e instanceof SageMakerRequestError)) throw e;
          const reason = `SageMaker refused the training job: ${e.message}`;
          await this.transition(id, "Fail", { failureReason: reason.slice(0, 8000), completedAt: new Date() }, { reason }, "failed");
          return {};
        }
        await this.db.getRepository(TrainingEntity).update({ id }, { jobCreated: true });
      }
      await this.transition(id, "Training", { startedAt: new Date() }, { sagemakerJobName: t.sagemakerJobName }, "started");
      t = (await this.load(id))!;
    }
    // A stop asked for while starting, or one SageMaker did not take (throttled): asked again on each pass until it is.
    if (t.stopRequested && t.status === "Training") await this.stopRunning(t, "stop requested earlier").catch((e: unknown) => this.log.warn({ err: e, trainingId: id }, "stopping the training job failed; trying again on the next pass"));
    const d = await this.trainer.describe(t.sagemakerJobName);
    if (!d) {
      if (t.statusChecks >= 10) {
        const reason = `SageMaker does not know the training job ${t.sagemakerJobName}`;
        await this.transition(id, "Fail", { failureReason: reason, completedAt: new Date() }, { reason }, "failed");
        return {};
      }
      await this.db.getRepository(TrainingEntity).increment({ id }, "statusChecks", 1);
      return { recheckInMs: this.settings.watchInitialMs };
    }
    await this.record(id, d);
    switch (d.TrainingJobStatus) {
      case "Completed":
        await this.complete(id, d);
        return {};
      case "Failed": {
        const reason = d.FailureReason ?? "SageMaker reported the training job Failed without a reason";
        await this.transition(id, "Fail", { failureReason: reason.slice(0, 8000), completedAt: new Date() }, { reason, secondaryStatus: d.SecondaryStatus ?? null }, "failed");
        return {};
      }
      case "Stopped": {
        const reason = d.SecondaryStatus === "MaxRuntimeExceeded" || d.SecondaryStatus === "MaxWaitTimeExceeded" ? `stopped by SageMaker: ${d.SecondaryStatus}` : (d.FailureReason ?? null);
        await this.transition(id, "Stopped", { completedAt: new Date(), ...(reason ? { failureReason: reason } : {}) }, { secondaryStatus: d.SecondaryStatus ?? null, ...(reason ? { reason } : {}) }, "stopped");
        return {};
      }
      default: {
        if (d.TrainingJobStatus === "Stopping") await this.transition(id, "Stopping", {}, { by: "SageMaker" }, "stopping");
        const checks = (await this.load(id))?.statusChecks ?? 0;
        await this.db.getRepository(TrainingEntity).increment({ id }, "statusChecks", 1);
        return { recheckInMs: Math.min(30_000, Math.round(this.settings.watchInitialMs * 1.5 ** Math.min(checks, 20))) };
      }
    }
  }

  /** Records new SecondaryStatusTransitions and metrics as events, under the row lock (a duplicate pass records nothing twice). */
  private async record(id: string, d: TrainingDescription): Promise<void> {
    const transitions = d.SecondaryStatusTransitions ?? [];
    const metric = (name: string) => d.FinalMetricDataList?.find((m) => m.MetricName === name)?.Value;
    const metrics = Object.fromEntries(["epoch", "step", "loss"].flatMap((n) => (metric(n) !== undefined ? [[n, metric(n)!]] : []))) as Record<string, number>;
    await this.events.transaction(async (tx, events) => {
      const t = await this.locked(tx, id);
      if (!t || isFinalTraining(t.status)) return;
      const fresh = transitions.slice(t.transitionsSeen);
      for (const tr of fresh) {
        await events.append(id, { type: "secondary-status", data: { status: tr.Status ?? null, message: tr.StatusMessage ?? null, startTime: tr.StartTime?.toISOString() ?? null } });
      }
      const metricsChanged = Object.keys(metrics).length > 0 && JSON.stringify(metrics) !== JSON.stringify(t.metrics);
      if (metricsChanged) await events.append(id, { type: "metrics", data: metrics });
      if (fresh.length || metricsChanged || t.secondaryStatus !== (d.SecondaryStatus ?? null)) {
        await tx.update(TrainingEntity, { id }, { transitionsSeen: Math.max(t.transitionsSeen, transitions.length), secondaryStatus: d.SecondaryStatus ?? null, ...(metricsChanged ? { metrics } : {}) });
      }
    });
  }

  /** The artifact becomes an Active checkpoint of the training's creator, and the training Complete, in one step. */
  private async complete(id: string, d: TrainingDescription): Promise<void> {
    const t = (await this.load(id))!;
    const artifact = d.ModelArtifacts?.S3ModelArtifacts;
    const key = keyInBucket(artifact, this.settings.bucket);
    const fail = (reason: string) => this.transition(id, "Fail", { failureReason: reason, completedAt: new Date(), artifactUri: artifact ?? null }, { reason }, "failed");
    if (!key) {
      await fail(`the training job's artifact ${artifact ?? "(none)"} is not in the bucket ${this.settings.bucket}`);
      return;
    }
    const checkpointId = nameBasedUuid(`training-checkpoint:${id}`);
    const finish = async (tx: EntityManager, events: EventRecorder) => {
      await this.transitionIn(tx, events, id, "Complete", { completedAt: new Date(), artifactUri: artifact!, checkpointId }, { checkpointId, artifactUri: artifact }, "completed");
    };
    if (await this.db.getRepository(CheckpointEntity).existsBy({ id: checkpointId })) {
      await this.events.transaction(finish);
      return;
    }
    const base = `${t.modelName}-${id.slice(0, 8)}`;
    try {
      await this.produced.register(
        { id: checkpointId, type: t.trainType as "Lora" | "Stable-diffusion", source: "training", message: `trained from model ${t.modelName} by training ${id}`, creatorId: t.creatorId, allowedRoles: t.allowedRoles },
        [{ key, kind: "tar.gz" }],
        { base, fallback: `${t.modelName}-${id.replace(/-/g, "")}` },
        finish,
      );
    } catch (e) {
      if (e instanceof UnusableArtifact || e instanceof CheckpointNameTaken) {
        await fail(`the training artifact ${artifact} could not be registered: ${(e as Error).message}`);
        return;
      }
      throw e;
    }
  }

  /** Unfinished trainings whose run job was lost or gave up: their run job again (same id, so never twice at once). */
  async resumeUnfinished(): Promise<number> {
    const open = await this.db.getRepository(TrainingEntity).findBy({ status: In(RUNNING_TRAINING) });
    for (const t of open) await this.queue.ensure("training.run", { trainingId: t.id }, trainingJobIds.run(t.id));
    return open.length;
  }

  // ---------------------------------------------------------------- reads

  private load(id: string): Promise<TrainingEntity | null> {
    return this.db.getRepository(TrainingEntity).findOneBy({ id });
  }

  private locked(tx: EntityManager, id: string): Promise<TrainingEntity | null> {
    return tx.getRepository(TrainingEntity).createQueryBuilder("t").setLock("pessimistic_write").where("t.id = :id", { id }).getOne();
  }

  private async writable(principal: Principal, id: string): Promise<TrainingEntity> {
    const t = await this.load(id);
    assertMayChange(principal, "train", t, `no such train job with id(${id})`, `training ${id}`);
    return t;
  }

  async view(principal: Principal, id: unknown): Promise<TrainingView> {
    const trainingId = parseInput(idSchema, id, "id");
    const [found] = await this.query(principal, { ids: [trainingId] });
    if (!found) throw DomainError.notFound(`Job with id ${trainingId} not found`);
    return found;
  }

  async list(principal: Principal, input: unknown = {}): Promise<TrainingView[]> {
    if (!principal.permissions.allows("train", "list") && !principal.permissions.allows("train", "create")) throw DomainError.forbidden(`user "${principal.username}" has no permission to train (needs train:list, train:create or train:all)`);
    return this.query(principal, parseInput(listSchema, input));
  }

  private async query(principal: Principal, f: { ids?: string[]; statuses?: TrainingStatus[]; types?: string[] }): Promise<TrainingView[]> {
    const vis = visibleToCaller(principal, "train", "t");
    const qb = this.db
      .getRepository(TrainingEntity)
      .createQueryBuilder("t")
      .leftJoin("users", "u", "u.id = t.creator_id")
      .addSelect("u.username", "creator_username")
      .where(vis.sql, vis.params)
      .orderBy("t.created_at", "DESC")
      .addOrderBy("t.id", "DESC")
      .limit(1000);
    if (f.ids) qb.andWhere("t.id IN (:...ids)", { ids: f.ids });
    if (f.statuses?.length) qb.andWhere("t.status IN (:...statuses)", { statuses: f.statuses });
    if (f.types?.length) qb.andWhere("t.train_type IN (:...types)", { types: f.types });
    const { entities, raw } = await qb.getRawAndEntities();
    return entities.map((t, i) => ({
      id: t.id,
      trainType: t.trainType,
      modelId: t.modelId,
      modelName: t.modelName,
      status: t.status,
      secondaryStatus: t.secondaryStatus,
      sagemakerJobName: t.sagemakerJobName,
      instanceType: t.instanceType,
      params: withoutSecrets(t.params),
      datasets: t.datasetNames,
      classDatasets: t.classDatasetNames,
      inputFiles: t.inputFiles,
      inputLocation: this.uri(t.inputPrefix),
      outputLocation: this.uri(t.outputPrefix),
      spot: t.spot,
      metrics: t.metrics,
      artifactUri: t.artifactUri,
      checkpointId: t.checkpointId,
      failureReason: t.failureReason,
      creator: (raw[i] as { creator_username: string | null }).creator_username ?? null,
      creatorId: t.creatorId,
      createdAt: t.createdAt,
      startedAt: t.startedAt,
      completedAt: t.completedAt,
    }));
  }

  async follow(principal: Principal, id: unknown, after: unknown): Promise<AsyncIterableIterator<StoredEvent>> {
    const t = await this.view(principal, id);
    return this.events.followFrom(t.id, after, "the training's");
  }

  // ---------------------------------------------------------------- transitions

  private transition(id: string, to: TrainingStatus, patch: Partial<TrainingEntity>, data: Record<string, unknown>, type: string): Promise<boolean> {
    return this.events.transaction((tx, events) => this.transitionIn(tx, events, id, to, patch, data, type));
  }

  /** Changes status under the row lock if allowed; records the event (terminal for final states). */
  private async transitionIn(tx: EntityManager, events: EventRecorder, id: string, to: TrainingStatus, patch: Partial<TrainingEntity>, data: Record<string, unknown>, type: string): Promise<boolean> {
    const t = await this.locked(tx, id);
    if (!t || t.status === to || !canTrainingTransition(t.status, to)) return false;
    await tx.update(TrainingEntity, { id }, { ...(patch as Record<string, never>), status: to });
    await events.append(id, { type, data: { status: to, previous: t.status, ...data }, terminal: isFinalTraining(to) });
    return true;
  }
}
