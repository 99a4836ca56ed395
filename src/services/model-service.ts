import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { In, type DataSource, type EntityManager, type ObjectLiteral } from "typeorm";
import { z } from "zod";
import { mergeJobIds, modelJobIds } from "../../queues/job-types.js";
import type { JobQueue } from "../../queues/job-queue.js";
import { CheckpointEntity, CheckpointFileEntity } from "../adapters/db/entities/checkpoint.entity.js";
import { EndpointEntity } from "../adapters/db/entities/endpoint.entity.js";
import { MergeEntity, ModelEntity, TrainingEntity } from "../adapters/db/entities/training.entity.js";
import type { AsyncInvoker } from "../adapters/sagemaker/async-invoker.js";
import { SageMakerRequestError } from "../adapters/sagemaker/endpoint-provisioner.js";
import type { ObjectStore } from "../adapters/storage/object-store.js";
import { MAX_PARTS, extensionOf, fileNameProblem } from "../domain/checkpoints.js";
import { DomainError } from "../domain/errors.js";
import type { StoredEvent } from "../domain/events.js";
import { nameBasedUuid } from "../domain/name-uuid.js";
import { assertMayChange, visibleToCaller } from "../domain/ownership.js";
import type { Principal } from "../domain/principal.js";
import {
  MERGE_FORMATS,
  MERGE_METHODS,
  MODEL_NAME_MAX,
  MODEL_NAME_PATTERN,
  MODEL_STATUSES,
  RUNNING_TRAINING,
  bucketUri,
  canMergeTransition,
  canModelTransition,
  isFinalModel,
  keyInBucket,
  mergeKeys,
  modelKeys,
  paramsObject,
  withoutSecrets,
  type MergeStatus,
  type ModelStatus,
} from "../domain/trainings.js";
import { parseInput } from "../domain/validation.js";
import { parseWebUiJson } from "../domain/webui-parameters.js";
import type { CheckpointService, UploadTicket } from "./checkpoint-service.js";
import type { EventLog, EventRecorder } from "./event-log.js";
import { CheckpointNameTaken, UnusableArtifact, type ArtifactSource, type ProducedCheckpoints } from "./produced-checkpoints.js";

export interface ModelSettings {
  bucket: string;
  /** The async endpoint that runs model creation (and merges when the caller names none). */
  utilityEndpoint: string | undefined;
  taskTimeoutMs: number;
  watchInitialMs: number;
  maxDocumentBytes: number;
}

export interface ModelView {
  id: string;
  name: string;
  modelType: string;
  status: ModelStatus;
  checkpointId: string;
  params: Record<string, unknown>;
  endpointName: string | null;
  /** Where the created model is: `s3://<bucket>/<type>/model/<name>/<id>/output`. */
  outputLocation: string;
  outputKeys: string[];
  /** SageMaker's output document location for the invocation. */
  invocationOutputLocation: string | null;
  result: Record<string, unknown> | null;
  failureReason: string | null;
  creator: string | null;
  creatorId: string | null;
  createdAt: Date;
  completedAt: Date | null;
}

export interface MergeView {
  id: string;
  status: MergeStatus;
  checkpoints: string[];
  checkpointIds: string[];
  method: string;
  ratio: number;
  resultName: string;
  endpointName: string | null;
  checkpointId: string | null;
  failureReason: string | null;
  creator: string | null;
  createdAt: Date;
  completedAt: Date | null;
}

const modelName = z
  .string({ error: "must be a name" })
  .min(1, { error: "must not be empty" })
  .max(MODEL_NAME_MAX, { error: `must be at most ${MODEL_NAME_MAX} characters` })
  .regex(MODEL_NAME_PATTERN, { error: "must start with a letter and contain only letters, digits, _ and -" });
const idSchema = z.uuid({ error: "must be a model id (a UUID)" });
const mergeIdSchema = z.uuid({ error: "must be a merge id (a UUID)" });

const createSchema = z
  .object({
    name: modelName,
    modelType: z.literal("Stable-diffusion", { error: "must be Stable-diffusion (Dreambooth models are made from Stable-diffusion checkpoints)" }).default("Stable-diffusion"),
    checkpointId: z.uuid({ error: "must be a checkpoint id (a UUID)" }).optional(),
    files: z
      .array(z.object({ name: z.string({ error: "must be a file name" }).max(255), partsNumber: z.number({ error: "must be a whole number" }).int().min(1, { error: "must be at least 1" }).max(MAX_PARTS) }).strict(), { error: "must be a list of files" })
      .max(1, { error: "a model is made from one checkpoint file" })
      .optional(),
    params: paramsObject.optional(),
    creator: z.string({ error: "must be a user name" }).max(128).optional(),
  })
  .strict();

const listSchema = z
  .object({
    statuses: z.array(z.enum(MODEL_STATUSES, { error: `must be one of ${MODEL_STATUSES.join(", ")}` })).max(MODEL_STATUSES.length * 2, { error: "too many statuses" }).optional(),
    types: z.array(z.string().max(32)).max(20, { error: "at most 20 types" }).optional(),
  })
  .strict();

const mergeSchema = z
  .object({
    checkpoints: z
      .array(z.string({ error: "must be a checkpoint file name" }).min(1).max(255), { error: "must be a list of checkpoint file names" })
      .min(2, { error: "a merge needs two or three checkpoints" })
      .max(3, { error: "a merge needs two or three checkpoints" }),
    method: z.enum(MERGE_METHODS, { error: `must be one of ${MERGE_METHODS.join(", ")}` }).optional(),
    ratio: z.number({ error: "must be a number from 0 to 1" }).min(0, { error: "must be from 0 to 1" }).max(1, { error: "must be from 0 to 1" }).default(0.3),
    name: modelName.optional(),
    format: z.enum(MERGE_FORMATS, { error: `must be one of ${MERGE_FORMATS.join(", ")}` }).default("safetensors"),
    saveAsHalf: z.boolean({ error: "must be true or false" }).default(false),
    endpointName: z.string().min(1).max(63).optional(),
  })
  .strict();

type TaskRow = ModelEntity | MergeEntity;

/**
 * Models (upstream's Dreambooth "create model" jobs) and checkpoint merges: both are one task run
 * on an async endpoint. The job writes the payload, marks "about to invoke", invokes with the
 * record's id as InferenceId, and watches the output and failure locations with backoff.
 */
export class ModelService {
  constructor(
    private readonly db: DataSource,
    private readonly events: EventLog,
    private readonly queue: JobQueue,
    private readonly store: ObjectStore,
    private readonly invoker: AsyncInvoker,
    private readonly checkpoints: CheckpointService,
    private readonly produced: ProducedCheckpoints,
    private readonly settings: ModelSettings,
    private readonly log: Logger,
  ) {}

  private uri(key: string): string {
    return bucketUri(this.settings.bucket, key);
  }

  // ---------------------------------------------------------------- models

  /**
   * Creates an Initial model from an existing Active Stable-diffusion checkpoint the caller may use,
   * or with an upload of the checkpoint file (multipart, presigned part URLs as POST /checkpoints).
   */
  async create(principal: Principal, input: unknown): Promise<{ model: ModelView; uploads: UploadTicket[] }> {
    const v = parseInput(createSchema, input);
    if (v.creator !== undefined && v.creator !== principal.username) {
      throw DomainError.forbidden(`creator "${v.creator}" must be the calling user "${principal.username}"; identities are taken from credentials, not from the body`);
    }
    if (!principal.permissions.allows("train", "create")) throw DomainError.forbidden(`user "${principal.username}" has not permission to create a train job (needs train:create or train:all)`);
    const files = v.files ?? [];
    if (!v.checkpointId && files.length === 0) throw DomainError.badInput("checkpointId: either checkpoint_id or filenames need to be provided", "checkpointId");
    if (v.checkpointId && files.length) throw DomainError.badInput("files: give either an existing checkpoint or a file to upload, not both", "files");
    if (await this.db.getRepository(ModelEntity).existsBy({ name: v.name })) throw DomainError.conflict(`model ${v.name} already exists; choose another name`, "name");

    let checkpointId: string;
    let uploads: UploadTicket[] = [];
    let paramsFor: (checkpointId: string) => Record<string, unknown>;
    if (v.checkpointId) {
      const vis = visibleToCaller(principal, "checkpoint", "c");
      const c = await this.db.getRepository(CheckpointEntity).createQueryBuilder("c").where("c.id = :id", { id: v.checkpointId }).andWhere(vis.sql, vis.params).getOne();
      if (!c) throw DomainError.badInput(`checkpointId: checkpoint ${v.checkpointId} is not found (or not shared with you)`, "checkpointId");
      if (c.status !== "Active") throw DomainError.badInput(`checkpointId: checkpoint with id (${c.id}) is not Active to use`, "checkpointId");
      if (c.type !== "Stable-diffusion") throw DomainError.badInput(`checkpointId: checkpoint ${c.id} is ${c.type}; a model is made from a Stable-diffusion checkpoint`, "checkpointId");
      checkpointId = c.id;
      const fileNames = (await this.db.getRepository(CheckpointFileEntity).find({ where: { checkpointId: c.id }, order: { position: "ASC" } })).map((f) => f.name);
      paramsFor = this.modelParams(v.name, v.params ?? {}, fileNames);
    } else {
      const problem = fileNameProblem(files[0]!.name);
      if (problem) throw DomainError.badInput(`files.0.name: ${problem}`, "files.0.name");
      // Every refusal comes before the upload is opened: a refused model leaves no checkpoint behind.
      paramsFor = this.modelParams(v.name, v.params ?? {}, [files[0]!.name]);
      const out = await this.checkpoints.createUpload(principal, { type: "Stable-diffusion", files: [{ name: files[0]!.name, partsNumber: files[0]!.partsNumber }], message: `source of model ${v.name}` });
      checkpointId = out.checkpoint.id;
      uploads = out.uploads;
    }
    const params = paramsFor(checkpointId);

    const id = randomUUID();
    const keys = modelKeys(v.modelType, v.name, id);
    try {
      await this.events.transaction(async (tx, events) => {
        await tx.insert(ModelEntity, {
          id,
          name: v.name,
          modelType: v.modelType,
          status: "Initial",
          checkpointId,
          params: params as Record<string, never>,
          outputPrefix: keys.output,
          payloadKey: keys.payload,
          creatorId: principal.userId,
          allowedRoles: principal.roles,
        });
        await events.openStream(id, "model", principal.userId);
        await events.append(id, { type: "status", data: { status: "Initial", checkpointId } });
      });
    } catch (e) {
      if (uploads.length) await this.checkpoints.delete(principal, [checkpointId]).catch(() => undefined);
      if ((e as { code?: string }).code === "23505") throw DomainError.conflict(`model ${v.name} already exists; choose another name`, "name");
      throw e;
    }
    return { model: await this.view(principal, id), uploads };
  }

  /** Checks upstream's params; gives them with the source pinned to the verified checkpoint (a caller cannot point the container elsewhere). */
  private modelParams(name: string, given: Record<string, unknown>, fileNames: string[]): (checkpointId: string) => Record<string, unknown> {
    const cmp = given.create_model_params;
    if (cmp !== undefined && (typeof cmp !== "object" || cmp === null || Array.isArray(cmp))) throw DomainError.badInput("params.create_model_params: must be an object", "params.create_model_params");
    const create = { ...((cmp as Record<string, unknown> | undefined) ?? {}) };
    const newName = create.new_model_name ?? name;
    if (typeof newName !== "string" || !MODEL_NAME_PATTERN.test(newName) || newName.length > MODEL_NAME_MAX) {
      throw DomainError.badInput("params.create_model_params.new_model_name: must start with a letter and contain only letters, digits, _ and -", "params.create_model_params.new_model_name");
    }
    const ckpt = create.ckpt_path ?? fileNames[0];
    if (typeof ckpt !== "string" || !fileNames.includes(ckpt)) {
      throw DomainError.badInput(`params.create_model_params.ckpt_path: must be a file of the checkpoint (${fileNames.join(", ")})`, "params.create_model_params.ckpt_path");
    }
    return (checkpointId) => ({
      ...given,
      ckpt_from_cloud: true,
      s3_ckpt_path: `${this.uri(`Stable-diffusion/checkpoint/custom/${checkpointId}`)}/${ckpt}`,       create_model_params: { from_hub: false, new_model_url: "", new_model_token: "", extract_ema: false, train_unfrozen: false, is_512: true, ...create, new_model_name: newName, ckpt_path: ckpt },
    });
  }

  /**
   * Upstream's PUT /models/{id}: `Creating` completes the source upload (when there is one) and
   * queues the creation on the utility endpoint. Asking again while Creating is harmless.
   */
  async setStatus(principal: Principal, id: unknown, status: unknown, tags?: unknown): Promise<ModelView> {
    const modelId = parseInput(idSchema, id, "id");
    parseInput(z.literal("Creating", { error: "only Creating can be requested (Complete and Fail are set when the creation ends)" }), status, "status");
    const m = await this.writableModel(principal, modelId);
    if (m.status === "Creating") return this.view(principal, modelId);
    if (m.status !== "Initial") throw DomainError.conflict(`model ${m.name} is ${m.status}; please create a new model creation job`, "status");
    const endpoint = await this.utilityEndpoint();
    const checkpoint = await this.db.getRepository(CheckpointEntity).findOneBy({ id: m.checkpointId });
    if (!checkpoint) throw DomainError.conflict(`the source checkpoint ${m.checkpointId} of model ${m.name} was deleted`, "status");
    if (checkpoint.status === "Initial") {
      if (tags === undefined || tags === null || (typeof tags === "object" && Object.keys(tags).length === 0)) throw DomainError.badInput("parts: multi parts tags is empty; give the uploaded parts' ETags to complete the upload", "parts");
      await this.checkpoints.completeUpload(principal, checkpoint.id, tags);
    } else if (checkpoint.status !== "Active") {
      throw DomainError.conflict(`the source checkpoint ${checkpoint.id} is ${checkpoint.status}`, "status");
    }
    const moved = await this.transitionModel(modelId, "Creating", { endpointName: endpoint.name }, { endpointName: endpoint.name }, "creating");
    if (moved) await this.queue.enqueue("model.create", { modelId }, modelJobIds.create(modelId));
    return this.view(principal, modelId);
  }

  private async utilityEndpoint(name?: string, principal?: Principal): Promise<EndpointEntity> {
    const wanted = name ?? this.settings.utilityEndpoint;
    if (!wanted) throw DomainError.conflict("no utility endpoint is configured: set MODEL_UTILITY_ENDPOINT to an Async endpoint deployed through Diffgate", "endpointName");
    const qb = this.db.getRepository(EndpointEntity).createQueryBuilder("e").where("e.name = :name AND e.status <> 'Deleted'", { name: wanted });
    if (name && principal && !principal.permissions.allows("sagemaker_endpoint", "all")) qb.andWhere("(e.owner_roles && :roles OR e.creator_id = :me)", { roles: principal.roles, me: principal.userId });
    const e = await qb.getOne();
    if (!e) throw DomainError.conflict(`endpoint ${wanted} is not deployed through Diffgate${name ? " (or not shared with you)" : " (MODEL_UTILITY_ENDPOINT)"}`, "endpointName");
    if (e.endpointType !== "Async") throw DomainError.conflict(`endpoint ${wanted} is ${e.endpointType}; an Async endpoint is needed`, "endpointName");
    if (e.status !== "InService" && e.status !== "Updating") throw DomainError.conflict(`endpoint ${wanted} is ${e.status}, not InService`, "endpointName");
    return e;
  }

  /** The model-creation job: one pass (invoke once, then watch). */
  async runCreate(id: string): Promise<{ recheckInMs?: number }> {
    const m = await this.db.getRepository(ModelEntity).findOneBy({ id });
    if (!m || m.status !== "Creating") return {};
    const payload = () => ({
      task: "db-create-model",
      param_s3: "",
      db_create_model_payload: JSON.stringify({
        s3_output_path: this.uri(m.outputPrefix),
        s3_input_path: this.uri(`Stable-diffusion/checkpoint/custom/${m.checkpointId}`),
        ckpt_names: [(m.params.create_model_params as Record<string, unknown>).ckpt_path],
        param: m.params,
        job_id: m.id,
      }),
    });
    const fail = async (reason: string) => void (await this.transitionModel(id, "Fail", { failureReason: reason.slice(0, 8000), completedAt: new Date() }, { reason: reason.slice(0, 8000) }, "failed"));
    return this.advance(ModelEntity, m, payload, fail, async (doc) => {
      if (doc && doc.statusCode !== undefined && doc.statusCode !== 200) {
        const message = typeof doc.message === "string" ? doc.message : JSON.stringify(doc.message ?? null);
        return fail(`model creation failed (statusCode ${String(doc.statusCode)}): ${message}`);
      }
      const outputs = await this.store.listObjects(m.outputPrefix);
      if (!outputs.length) return fail(`the utility endpoint reported success but wrote nothing under ${this.uri(m.outputPrefix)}`);
      const result = doc && typeof doc.message === "object" && doc.message !== null ? (doc.message as Record<string, unknown>) : null;
      await this.transitionModel(id, "Complete", { completedAt: new Date(), outputKeys: outputs.map((o) => o.key), result }, { outputLocation: this.uri(m.outputPrefix), files: outputs.map((o) => o.key.slice(m.outputPrefix.length)) }, "completed");
    });
  }

  /**
   * Invokes once and watches. The "about to invoke" marker is stored before InvokeEndpointAsync; a
   * pass that finds it without a recorded invocation (the worker died mid-call, or the answer was
   * lost) never invokes again: it waits for output under the task's own output prefix until the
   * timeout. An invocation SageMaker answered with an error was not accepted, so the marker is cleared.
   */
  private async advance(
    entity: typeof ModelEntity | typeof MergeEntity,
    row: TaskRow,
    payload: () => Record<string, unknown>,
    fail: (reason: string) => Promise<void>,
    onOutput: (doc: Record<string, unknown> | null) => Promise<void>,
  ): Promise<{ recheckInMs?: number }> {
    const repo = this.db.getRepository<ObjectLiteral>(entity);
    const since = (row.invokeAttemptedAt ?? row.createdAt).getTime();
    const timedOut = Date.now() - since > this.settings.taskTimeoutMs;
    const outputPrefix = (row as { outputPrefix: string }).outputPrefix;
    if (!row.invoked && !row.invokeAttemptedAt) {
      const endpointName = row.endpointName!;
      await this.store.putObject(row.payloadKey, JSON.stringify(payload()), "application/json");
      await repo.update({ id: row.id }, { invokeAttemptedAt: new Date() });
      try {
        const out = await this.invoker.invoke({ endpointName, inputLocation: this.uri(row.payloadKey), inferenceId: row.id, invocationTimeoutSeconds: 3600, requestTtlSeconds: 21600 });
        await repo.update({ id: row.id }, { invoked: true, outputLocation: out.outputLocation, failureLocation: out.failureLocation ?? null });
      } catch (e) {
        if (e instanceof SageMakerRequestError) {
          await fail(`SageMaker refused the invocation: ${e.message}`);
          return {};
        }
        if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode) await repo.update({ id: row.id }, { invokeAttemptedAt: null });
        throw e;
      }
      this.log.info({ id: row.id, endpointName }, "task invoked");
      return { recheckInMs: this.settings.watchInitialMs };
    }
    if (!row.invoked) {
      const found = await this.store.listObjects(outputPrefix);
      if (found.length) {
        await onOutput(null);
        return {};
      }
      if (timedOut) {
        await fail(`the worker stopped while invoking ${row.endpointName}, and no output appeared under ${this.uri(outputPrefix)} in time; run it again`);
        return {};
      }
    } else {
      const outputKey = keyInBucket(row.outputLocation, this.settings.bucket);
      const failureKey = keyInBucket(row.failureLocation, this.settings.bucket);
      const output = outputKey ? await this.store.getBytes(outputKey, this.settings.maxDocumentBytes) : undefined;
      if (output) {
        let doc: unknown;
        try {
          doc = parseWebUiJson(output.toString("utf8"));
        } catch {
          doc = undefined;
        }
        if (doc === null || typeof doc !== "object" || Array.isArray(doc)) await fail(`the endpoint's output document is not a JSON object (${row.outputLocation})`);
        else await onOutput(doc as Record<string, unknown>);
        return {};
      }
      const failure = failureKey ? await this.store.getBytes(failureKey, this.settings.maxDocumentBytes) : undefined;
      if (failure) {
        let reason = failure.toString("utf8").trim() || "the endpoint wrote an empty failure document";
        try {
          const d = parseWebUiJson(reason) as { error?: unknown; detail?: unknown } | null;
          if (d && typeof d.detail === "string") reason = typeof d.error === "string" ? `${d.error}: ${d.detail}` : d.detail;
        } catch {
          // not JSON: keep the text
        }
        await fail(reason);
        return {};
      }
      if (timedOut) {
        await fail(`no output from endpoint ${row.endpointName} after ${Math.round(this.settings.taskTimeoutMs / 1000)} s (looked at ${row.outputLocation})`);
        return {};
      }
    }
    await repo.increment({ id: row.id }, "outputChecks", 1);
    return { recheckInMs: Math.min(30_000, Math.round(this.settings.watchInitialMs * 1.5 ** Math.min(row.outputChecks, 20))) };
  }

  /** Model creations and merges whose job was lost or gave up: their job again (same id, so never twice at once). */
  async resumeUnfinished(): Promise<number> {
    const models = await this.db.getRepository(ModelEntity).findBy({ status: "Creating" });
    for (const m of models) await this.queue.ensure("model.create", { modelId: m.id }, modelJobIds.create(m.id));
    const merges = await this.db.getRepository(MergeEntity).find({ where: [{ status: "Queued" }, { status: "Merging" }] });
    for (const m of merges) await this.queue.ensure("merge.run", { mergeId: m.id }, mergeJobIds.run(m.id));
    return models.length + merges.length;
  }

  /**
   * Deletes models (all or none) and their own objects; the source checkpoint stays (upstream §3.6).
   * The checks run again under the rows' locks, so a creation or a training start that raced with
   * the request is seen; objects go only once the rows are gone.
   */
  async deleteModels(principal: Principal, ids: unknown): Promise<string[]> {
    const list = [...new Set(parseInput(z.array(idSchema, { error: "must be a list of model ids" }).min(1, { error: "must name at least one model" }).max(100, { error: "at most 100 at once" }), ids, "ids"))];
    await Promise.all(list.map((id) => this.writableModel(principal, id)));
    const deleted = await this.events.transaction(async (tx, events) => {
      const models = await tx.getRepository(ModelEntity).createQueryBuilder("m").setLock("pessimistic_write").where("m.id IN (:...ids)", { ids: list }).orderBy("m.id").getMany();
      const creating = models.filter((m) => m.status === "Creating");
      if (creating.length) throw DomainError.conflict(`model(s) ${creating.map((m) => m.name).join(", ")} are being created; wait for them to end`, "ids");
      // A running training reads the model's output: deleting it would break the training.
      const training = await tx.getRepository(TrainingEntity).findBy({ modelId: In(list), status: In(RUNNING_TRAINING) });
      if (training.length) throw DomainError.conflict(`model(s) ${[...new Set(training.map((t) => t.modelName))].join(", ")} are used by running training(s) ${training.map((t) => t.id).join(", ")}; stop them first`, "ids");
      for (const m of models) {
        await tx.delete(ModelEntity, { id: m.id });
        if (!isFinalModel(m.status)) await events.append(m.id, { type: "status", data: { status: "Deleted", previous: m.status }, terminal: true });
      }
      return models;
    });
    for (const m of deleted) await this.store.deletePrefix(modelKeys(m.modelType, m.name, m.id).base);
    return list;
  }

  private async writableModel(principal: Principal, id: string): Promise<ModelEntity> {
    const m = await this.db.getRepository(ModelEntity).findOneBy({ id });
    assertMayChange(principal, "train", m, `model with id ${id} is not found`, `model ${id}`);
    return m;
  }

  async view(principal: Principal, id: unknown): Promise<ModelView> {
    const modelId = parseInput(idSchema, id, "id");
    const [found] = await this.queryModels(principal, { ids: [modelId] });
    if (!found) throw DomainError.notFound(`model with id ${modelId} is not found`);
    return found;
  }

  async list(principal: Principal, input: unknown = {}): Promise<ModelView[]> {
    if (!principal.permissions.allows("train", "list") && !principal.permissions.allows("train", "create")) throw DomainError.forbidden(`user "${principal.username}" has no permission to train (needs train:list, train:create or train:all)`);
    return this.queryModels(principal, parseInput(listSchema, input));
  }

  private async queryModels(principal: Principal, f: { ids?: string[]; statuses?: ModelStatus[]; types?: string[] }): Promise<ModelView[]> {
    const vis = visibleToCaller(principal, "train", "m");
    const qb = this.db.getRepository(ModelEntity).createQueryBuilder("m").leftJoin("users", "u", "u.id = m.creator_id").addSelect("u.username", "creator_username").where(vis.sql, vis.params).orderBy("m.created_at", "DESC").addOrderBy("m.id", "DESC").limit(1000);
    if (f.ids) qb.andWhere("m.id IN (:...ids)", { ids: f.ids });
    if (f.statuses?.length) qb.andWhere("m.status IN (:...statuses)", { statuses: f.statuses });
    if (f.types?.length) qb.andWhere("m.model_type IN (:...types)", { types: f.types });
    const { entities, raw } = await qb.getRawAndEntities();
    return entities.map((m, i) => ({
      id: m.id,
      name: m.name,
      modelType: m.modelType,
      status: m.status,
      checkpointId: m.checkpointId,
      params: withoutSecrets(m.params),
      endpointName: m.endpointName,
      outputLocation: this.uri(m.outputPrefix),
      outputKeys: m.outputKeys,
      invocationOutputLocation: m.outputLocation,
      result: m.result,
      failureReason: m.failureReason,
      creator: (raw[i] as { creator_username: string | null }).creator_username ?? null,
      creatorId: m.creatorId,
      createdAt: m.createdAt,
      completedAt: m.completedAt,
    }));
  }

  async followModel(principal: Principal, id: unknown, after: unknown): Promise<AsyncIterableIterator<StoredEvent>> {
    const m = await this.view(principal, id);
    return this.events.followFrom(m.id, after, "the model's");
  }

  private transitionModel(id: string, to: ModelStatus, patch: Partial<ModelEntity>, data: Record<string, unknown>, type: string): Promise<boolean> {
    return this.events.transaction(async (tx, events) => {
      const m = await tx.getRepository(ModelEntity).createQueryBuilder("m").setLock("pessimistic_write").where("m.id = :id", { id }).getOne();
      if (!m || m.status === to || !canModelTransition(m.status, to)) return false;
      await tx.update(ModelEntity, { id }, { ...(patch as Record<string, never>), status: to });
      await events.append(id, { type, data: { status: to, previous: m.status, ...data }, terminal: isFinalModel(to) });
      return true;
    });
  }

  // ---------------------------------------------------------------- merges

  /** Queues a merge of two or three visible Active Stable-diffusion checkpoints (by file name). */
  async merge(principal: Principal, input: unknown): Promise<MergeView> {
    if (!principal.permissions.allows("checkpoint", "create")) throw DomainError.forbidden(`user "${principal.username}" has no permission to create checkpoints (needs checkpoint:create or checkpoint:all)`);
    const v = parseInput(mergeSchema, input);
    const method = v.method ?? (v.checkpoints.length === 3 ? "Add difference" : "Weighted sum");
    if (method === "Add difference" && v.checkpoints.length !== 3) throw DomainError.badInput("method: Add difference needs three checkpoints (primary + (secondary − tertiary) × ratio)", "method");
    if (method !== "Add difference" && v.checkpoints.length === 3) throw DomainError.badInput(`method: ${method} merges two checkpoints; a third is only used by Add difference`, "method");
    const dup = v.checkpoints.find((n, i) => v.checkpoints.indexOf(n) !== i);
    if (dup) throw DomainError.badInput(`checkpoints: ${dup} is listed twice`, "checkpoints");
    const vis = visibleToCaller(principal, "checkpoint", "c");
    const rows: Array<{ id: string; name: string; prefix: string }> = await this.db
      .getRepository(CheckpointFileEntity)
      .createQueryBuilder("f")
      .innerJoin(CheckpointEntity, "c", "c.id = f.checkpoint_id")
      .select(["c.id AS id", "f.name AS name", "c.prefix AS prefix"])
      .where("f.checkpoint_type = 'Stable-diffusion' AND f.name IN (:...names) AND c.status = 'Active'", { names: v.checkpoints })
      .andWhere(vis.sql, vis.params)
      .getRawMany();
    const sources = v.checkpoints.map((n, i) => {
      const r = rows.find((x) => x.name === n);
      if (!r) throw DomainError.badInput(`checkpoints.${i}: Stable-diffusion checkpoint ${n} is not found (or not Active, or not shared with you)`, `checkpoints.${i}`);
      return r;
    });
    const id = randomUUID();
    const stem = v.name ?? `merged-${id.slice(0, 8)}`;
    const resultName = `${stem}.${v.format}`;
    if (await this.db.getRepository(CheckpointFileEntity).existsBy({ checkpointType: "Stable-diffusion", name: resultName })) throw DomainError.conflict(`${resultName} already exists for type Stable-diffusion; choose another name`, "name");
    const endpoint = await this.utilityEndpoint(v.endpointName, principal);
    const keys = mergeKeys(id);
    await this.events.transaction(async (tx, events) => {
      await tx.insert(MergeEntity, {
        id,
        status: "Queued",
        sourceIds: sources.map((s) => s.id),
        sourceNames: sources.map((s) => s.name),
        method,
        ratio: v.ratio,
        resultName,
        options: { format: v.format, saveAsHalf: v.saveAsHalf, name: stem },
        outputPrefix: keys.output,
        payloadKey: keys.payload,
        endpointName: endpoint.name,
        creatorId: principal.userId,
        allowedRoles: principal.roles,
      });
      await events.openStream(id, "merge", principal.userId);
      await events.append(id, { type: "status", data: { status: "Queued", checkpoints: v.checkpoints, method, ratio: v.ratio, endpointName: endpoint.name } });
    });
    await this.queue.enqueue("merge.run", { mergeId: id }, mergeJobIds.run(id));
    return this.mergeView(principal, id);
  }

  /** The merge job: invoke once, watch, then the produced file becomes an Active checkpoint of the caller. */
  async runMerge(id: string): Promise<{ recheckInMs?: number }> {
    const m = await this.db.getRepository(MergeEntity).findOneBy({ id });
    if (!m || (m.status !== "Queued" && m.status !== "Merging")) return {};
    const fail = async (reason: string) => void (await this.transitionMerge(id, "Fail", { failureReason: reason.slice(0, 8000), completedAt: new Date() }, { reason: reason.slice(0, 8000) }, "failed"));
    const payload = () => {
      const [primary, secondary, tertiary] = m.sourceNames;
      const o = m.options as { format: string; saveAsHalf: boolean; name: string };
      return {
        task: "merge-checkpoint",
        username: m.creatorId ?? "",
        merge_checkpoint_payload: {
          primary_model_name: primary,
          secondary_model_name: secondary,
          teritary_model_name: tertiary ?? "",
          interp_method: m.method,
          interp_amount: m.ratio,
          save_as_half: o.saveAsHalf,
          custom_name: o.name,
          checkpoint_format: o.format,
          config_source: 0,
          bake_in_vae: "None",
          discard_weights: "",
          save_metadata: true,
          merge_model_s3: this.uri(m.outputPrefix),
        },
        checkpoint_info: { "Stable-diffusion": m.sourceNames.map((n, i) => ({ id: m.sourceIds[i], model_name: n, s3: this.uri(`Stable-diffusion/checkpoint/custom/${m.sourceIds[i]}`), type: "Stable-diffusion" })) },
      };
    };
    const out = await this.advance(MergeEntity, m, payload, fail, async (doc) => {
      if (doc && doc.statusCode !== undefined && doc.statusCode !== 200) return fail(`the merge failed (statusCode ${String(doc.statusCode)}): ${typeof doc.message === "string" ? doc.message : JSON.stringify(doc.message ?? null)}`);
      await this.registerMerge(m, fail);
    });
    if ((await this.db.getRepository(MergeEntity).findOneBy({ id }))?.invoked) await this.transitionMerge(id, "Merging", {}, { endpointName: m.endpointName }, "merging");
    return out;
  }

  private async registerMerge(m: MergeEntity, fail: (reason: string) => Promise<void>): Promise<void> {
    const objects = await this.store.listObjects(m.outputPrefix);
    const sources: ArtifactSource[] = objects.flatMap((o): ArtifactSource[] => {
      const lower = o.key.toLowerCase();
      if (lower.endsWith(".tar.gz") || lower.endsWith(".tgz")) return [{ key: o.key, kind: "tar.gz" }];
      if (lower.endsWith(".tar")) return [{ key: o.key, kind: "tar" }];
      return extensionOf(o.key.split("/").at(-1) ?? "") && !lower.endsWith(".yaml") ? [{ key: o.key, kind: "file" }] : [];
    });
    const o = m.options as { name: string };
    const checkpointId = nameBasedUuid(`merge-checkpoint:${m.id}`);
    try {
      await this.produced.register(
        { id: checkpointId, type: "Stable-diffusion", source: "merge", message: `merged from ${m.sourceNames.join(", ")} (${m.method}, ${m.ratio})`, creatorId: m.creatorId, allowedRoles: m.allowedRoles },
        sources,
        { base: o.name, fallback: `${o.name}-${m.id.slice(0, 8)}` },
        async (tx, events) => void (await this.transitionMergeIn(tx, events, m.id, "Complete", { checkpointId, completedAt: new Date() }, { checkpointId }, "completed")),
      );
    } catch (e) {
      if (e instanceof UnusableArtifact || e instanceof CheckpointNameTaken) return fail(`the merged checkpoint could not be registered: ${e.message}`);
      if ((e as { code?: string }).code === "23505" && (await this.db.getRepository(CheckpointEntity).existsBy({ id: checkpointId }))) return; // a previous pass registered it
      throw e;
    }
  }

  async mergeView(principal: Principal, id: unknown): Promise<MergeView> {
    const mergeId = parseInput(mergeIdSchema, id, "id");
    const vis = visibleToCaller(principal, "checkpoint", "m");
    const { entities, raw } = await this.db.getRepository(MergeEntity).createQueryBuilder("m").leftJoin("users", "u", "u.id = m.creator_id").addSelect("u.username", "creator_username").where("m.id = :id", { id: mergeId }).andWhere(vis.sql, vis.params).getRawAndEntities();
    const m = entities[0];
    if (!m) throw DomainError.notFound(`merge ${mergeId} is not found`);
    return {
      id: m.id,
      status: m.status,
      checkpoints: m.sourceNames,
      checkpointIds: m.sourceIds,
      method: m.method,
      ratio: m.ratio,
      resultName: m.resultName,
      endpointName: m.endpointName,
      checkpointId: m.checkpointId,
      failureReason: m.failureReason,
      creator: (raw[0] as { creator_username: string | null }).creator_username ?? null,
      createdAt: m.createdAt,
      completedAt: m.completedAt,
    };
  }

  private transitionMerge(id: string, to: MergeStatus, patch: Partial<MergeEntity>, data: Record<string, unknown>, type: string): Promise<boolean> {
    return this.events.transaction((tx, events) => this.transitionMergeIn(tx, events, id, to, patch, data, type));
  }

  private async transitionMergeIn(tx: EntityManager, events: EventRecorder, id: string, to: MergeStatus, patch: Partial<MergeEntity>, data: Record<string, unknown>, type: string): Promise<boolean> {
    const m = await tx.getRepository(MergeEntity).createQueryBuilder("m").setLock("pessimistic_write").where("m.id = :id", { id }).getOne();
    if (!m || m.status === to || !canMergeTransition(m.status, to)) return false;
    // Complete straight from Queued (a pass that found the output after a crash) records Merging first.
    if (m.status === "Queued" && to === "Complete") {
      await events.append(id, { type: "merging", data: { status: "Merging", previous: "Queued" } });
    }
    await tx.update(MergeEntity, { id }, { ...(patch as Record<string, never>), status: to });
    await events.append(id, { type, data: { status: to, previous: m.status === "Queued" && to === "Complete" ? "Merging" : m.status, ...data }, terminal: to === "Complete" || to === "Fail" });
    return true;
  }
}
