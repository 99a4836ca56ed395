import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import type { Logger } from "pino";
import { In, type DataSource, type EntityManager } from "typeorm";
import { z } from "zod";
import { inferenceJobIds } from "../../queues/job-types.js";
import type { JobQueue } from "../../queues/job-queue.js";
import { CheckpointEntity, CheckpointFileEntity } from "../adapters/db/entities/checkpoint.entity.js";
import { EndpointEntity } from "../adapters/db/entities/endpoint.entity.js";
import { InferenceEntity, type UsedModels } from "../adapters/db/entities/inference.entity.js";
import type { AsyncInvoker } from "../adapters/sagemaker/async-invoker.js";
import { SageMakerRequestError } from "../adapters/sagemaker/endpoint-provisioner.js";
import type { ObjectStore } from "../adapters/storage/object-store.js";
import { CHECKPOINT_TYPES } from "../domain/checkpoints.js";
import { asyncOutputLocations } from "../domain/endpoints.js";
import { DomainError } from "../domain/errors.js";
import { decodeKeysetCursor, encodeKeysetCursor, type KeysetCursor } from "../domain/keyset-cursor.js";
import type { NewEvent, StoredEvent } from "../domain/events.js";
import { INFERENCE_STATUSES, canTransition, inferenceKeys, isFinal, type InferenceStatus } from "../domain/inferences.js";
import { visibleToCaller } from "../domain/ownership.js";
import type { Principal } from "../domain/principal.js";
import { parseInput } from "../domain/validation.js";
import { INFERENCE_TASK_TYPES, checkWebUiParameters, parseWebUiJson, type InferenceTaskType } from "../domain/webui-parameters.js";
import type { EventLog, EventRecorder } from "./event-log.js";

export interface InferenceSettings {
  bucket: string;
  /** Base URL the endpoint containers reach Diffgate at (progress callbacks). */
  publicUrl: string;
  paramsUploadUrlTtlSeconds: number;
  resultUrlTtlSeconds: number;
  invocationTimeoutSeconds: number;
  requestTtlSeconds: number;
  outputTimeoutMs: number;
  watchInitialMs: number;
  previewEvery: number;
  maxConcurrentInvocationsPerInstance: number;
  /** Largest api_param.json / .out document read (base64 images make them big). */
  maxDocumentBytes: number;
  /** How often a job waiting for capacity looks again when nothing wakes it sooner. */
  dispatchRecheckMs: number;
  /**
   * Jobs per SageMaker instance dispatched beyond its concurrency: they wait in SageMaker's own queue,
   * so that an instance never idles while Diffgate notices that a job finished.
   */
  queueAheadPerInstance: number;
  /** The output watch's pace while jobs wait behind the watched one. */
  watchBusyMs: number;
}

/**
 * Runs a job on a self-hosted WebUI server (src/services/webui-job-runner.ts). The inference
 * service owns the job's record; the runner reports through the service's recording methods.
 */
export interface WebUiJobExecutor {
  run(job: InferenceEntity, endpoint: EndpointEntity): Promise<{ recheckInMs?: number }>;
  /** Interrupts the server only when it is running this job right now; says what it did. */
  interruptIfRunning(job: InferenceEntity, endpoint: EndpointEntity): Promise<string>;
  /** Which of the server's checkpoints a requested name means, or undefined. */
  serverModel(endpoint: EndpointEntity, name: string): string | undefined;
}

/** Where a job stands at its endpoint's gate. */
export interface QueueStanding {
  /** 1 = next to be dispatched. */
  position: number;
  ahead: number;
  capacity: number;
  inFlight: number;
  reason?: string;
}

/** Presigned URLs kept for reuse (a few per job being followed). */
const PRESIGNED_CACHE_SIZE = 10_000;

/** How many waiting jobs are woken at once when a slot frees; the rest look again on their own. */
const WAKE_AHEAD = 5;

export interface InferenceView {
  id: string;
  taskType: string;
  status: InferenceStatus;
  endpointId: string;
  endpointName: string;
  creator: string | null;
  creatorId: string | null;
  ownerRoles: string[];
  models: UsedModels;
  paramsKey: string;
  outputLocation: string | null;
  failureLocation: string | null;
  imageKeys: string[];
  paramFileKey: string | null;
  failureReason: string | null;
  lastStep: number;
  totalSteps: number | null;
  previewKey: string | null;
  cancelRequested: boolean;
  /** While QUEUED: the last announced place in the endpoint's line. */
  queuePosition: number | null;
  createdAt: Date;
  queuedAt: Date | null;
  dispatchedAt: Date | null;
  completedAt: Date | null;
}

export interface CancelOutcome {
  inference: InferenceView;
  cancelled: boolean;
  message: string;
}

const idSchema = z.uuid({ error: "must be an inference id (a UUID)" });
const taskSchema = z.enum(INFERENCE_TASK_TYPES, { error: `must be one of ${INFERENCE_TASK_TYPES.join(", ")}` });

const createSchema = z
  .object({
    taskType: taskSchema,
    endpointName: z.string({ error: "must be an endpoint name" }).min(1, { error: "must not be empty" }).max(63),
    inferenceType: z.enum(["Async", "Real-time", "Serverless"], { error: "must be Async, Real-time or Serverless" }).optional(),
    models: z.record(z.string(), z.array(z.string({ error: "must be a file name" }).min(1).max(255), { error: "must be a list of file names" }).max(20), { error: "must map checkpoint types to lists of file names" }).default({}),
    /** The one-shot form: the WebUI parameters, queued at once. */
    parameters: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

const listSchema = z
  .object({
    statuses: z.array(z.enum(INFERENCE_STATUSES, { error: `must be one of ${INFERENCE_STATUSES.join(", ")}` })).optional(),
    taskTypes: z.array(taskSchema).optional(),
    endpointName: z.string().max(63).optional(),
    createdAfter: z.coerce.date({ error: "must be a time" }).optional(),
    createdBefore: z.coerce.date({ error: "must be a time" }).optional(),
    username: z.string().max(64).optional(),
    first: z.number().int().min(1, { error: "must be at least 1" }).max(500, { error: "must be at most 500" }).default(50),
    after: z.string().max(200).optional(),
  })
  .strict();

const progressSchema = z
  .object({
    inference_id: z.string().nullable().optional(),
    step: z.number().int().min(1),
    total_steps: z.number().int().min(1),
    eta_seconds: z.number().min(0).optional(),
    preview: z.string().max(200_000).optional(),
  })
  .loose();

/** The id of a user's inference event stream: a name-based (v5) UUID of the user id. */
export function userInferenceStreamId(userId: string): string {
  const ns = Buffer.from("5f0c6a52-1d7e-4b7a-9a51-6a3f2c1e8d40".replace(/-/g, ""), "hex");
  const hash = createHash("sha1").update(Buffer.concat([ns, Buffer.from(`user_inferences:${userId}`, "utf8")])).digest();
  const b = hash.subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Appends an inference event to the job's stream and a copy to its creator's stream (same
 * transaction), so that myInferenceEvents replays and follows with the same log and cursor rules.
 */
async function appendInferenceEvent(events: EventRecorder, jobId: string, creatorId: string | null, event: NewEvent): Promise<StoredEvent> {
  const stored = await events.append(jobId, event);
  if (creatorId) {
    const userStream = userInferenceStreamId(creatorId);
    await events.openStream(userStream, "user_inferences", creatorId);
    await events.append(userStream, { type: event.type, data: { ...stored.data, inferenceId: jobId, inferenceSeq: stored.seq, inferenceTerminal: stored.terminal } });
  }
  return stored;
}

const sha256 = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");

/** JSON with sorted keys, so that equal requests hash equally. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** `s3://bucket/key` → key (in our bucket), else undefined. */
function keyOf(location: string | null, bucket: string): string | undefined {
  if (!location) return undefined;
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(location);
  return m && m[1] === bucket ? m[2] : undefined;
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
function pngSize(b: Buffer): { width: number; height: number } | undefined {
  if (b.length < 24 || !b.subarray(0, 8).equals(PNG_SIGNATURE) || b.toString("latin1", 12, 16) !== "IHDR") return undefined;
  return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
}

function decodeImage(value: unknown, n: number): Buffer {
  if (typeof value !== "string") throw new Error(`image ${n} of the output is not a base64 string`);
  const data = value.replace(/^data:image\/[a-z]+;base64,/i, "");
  const bytes = Buffer.from(data, "base64");
  if (!pngSize(bytes)) throw new Error(`image ${n} of the output is not a PNG`);
  return bytes;
}

/**
 * Inference jobs: create (upstream's two steps or the seed's one shot), queue, dispatch to an async
 * SageMaker endpoint, watch for the output, collect the images, cancel, list, delete, progress
 * callbacks from the container, and their event streams.
 *
 * Capacity: jobs wait here, in line per endpoint, until the endpoint has a free slot (the gate:
 * claimSlot, docs/architecture.md "The dispatch gate"); the queued and position events tell each its
 * place and why it waits. Jobs of WebUI endpoints are run by the WebUiJobExecutor.
 */
export class InferenceService {
  constructor(
    private readonly db: DataSource,
    private readonly events: EventLog,
    private readonly queue: JobQueue,
    private readonly store: ObjectStore,
    private readonly invoker: AsyncInvoker,
    private readonly settings: InferenceSettings,
    private readonly log: Logger,
  ) {}

  private webUi: WebUiJobExecutor | undefined;

  /** Set once at wiring: who runs jobs of WebUI endpoints. */
  useWebUiExecutor(executor: WebUiJobExecutor): void {
    this.webUi = executor;
  }

  /** Where endpoints reach this deployment (set after listening when the port was chosen by the OS). */
  setPublicUrl(url: string): void {
    this.settings.publicUrl = url.replace(/\/+$/, "");
  }

  // ---------------------------------------------------------------- requests

  /**
   * Creates a job. Without `parameters` (upstream's first step) the answer carries a presigned PUT
   * for api_param.json, and `start` queues it; with them (the seed's one shot) it is queued at once.
   * A repeated `idempotencyKey` returns the original job; the same key with another body is a conflict.
   */
  async create(principal: Principal, input: unknown, idempotencyKey?: string): Promise<{ inference: InferenceView; paramsUploadUrl?: string; replayed: boolean }> {
    if (!principal.permissions.allows("inference", "create")) throw DomainError.forbidden(`user "${principal.username}" has no permission to run inferences (needs inference:create or inference:all)`);
    const key = idempotencyKey === undefined ? undefined : parseInput(z.string({ error: "must be a string" }).min(1, { error: "must not be empty" }).max(255, { error: "must be at most 255 characters" }), idempotencyKey, "idempotencyKey");
    const hash = sha256(canonical(input));
    if (key) {
      const replay = await this.replay(principal, key, hash);
      if (replay) return replay;
    }
    const v = parseInput(createSchema, input);
    if (v.inferenceType !== undefined && v.inferenceType !== "Async") throw DomainError.badInput(`inferenceType: only Async inference is supported (got ${v.inferenceType})`, "inferenceType");
    const task: InferenceTaskType = v.taskType;
    if (v.parameters !== undefined) checkWebUiParameters(task, v.parameters);
    const endpoint = await this.usableEndpoint(principal, v.endpointName);
    const models = endpoint.provider === "webui" ? this.webUiModels(endpoint, v.models) : await this.usedModels(principal, v.models);

    const id = randomUUID();
    const keys = inferenceKeys(task, id);
    try {
      await this.events.transaction(async (tx, events) => {
        await tx.insert(InferenceEntity, {
          id,
          taskType: task,
          status: "CREATED",
          endpointId: endpoint.id,
          endpointName: endpoint.name,
          creatorId: principal.userId,
          ownerRoles: principal.roles,
          models,
          paramsKey: keys.params,
          payloadKey: keys.payload,
          idempotencyKey: key ?? null,
          requestHash: key ? hash : null,
        });
        await events.openStream(id, "inference", principal.userId);
        await appendInferenceEvent(events, id, principal.userId, { type: "created", data: { status: "CREATED", taskType: task, endpointName: endpoint.name } });
      });
    } catch (e) {
      if (key && (e as { code?: string }).code === "23505") {
        const replay = await this.replay(principal, key, hash);
        if (replay) return replay;
      }
      throw e;
    }
    if (v.parameters === undefined) {
      const paramsUploadUrl = await this.store.presignPut(keys.params, this.settings.paramsUploadUrlTtlSeconds);
      return { inference: await this.view(principal, id), paramsUploadUrl, replayed: false };
    }
    await this.store.putObject(keys.params, JSON.stringify(v.parameters), "application/json");
    await this.enqueue(id);
    return { inference: await this.view(principal, id), replayed: false };
  }

  private async replay(principal: Principal, key: string, hash: string): Promise<{ inference: InferenceView; replayed: true } | undefined> {
    const existing = await this.db.getRepository(InferenceEntity).findOneBy({ creatorId: principal.userId, idempotencyKey: key });
    if (!existing) return undefined;
    if (existing.requestHash !== hash) throw DomainError.conflict(`the Idempotency-Key "${key}" was used for a different request (inference ${existing.id}); use a new key`, "idempotencyKey");
    return { inference: await this.view(principal, existing.id), replayed: true };
  }

  /** Upstream's second step: reads the uploaded api_param.json, checks it and queues the job. Starting again is harmless. */
  async start(principal: Principal, id: unknown): Promise<InferenceView> {
    const job = await this.writable(principal, parseInput(idSchema, id, "id"));
    if (job.status !== "CREATED") return this.view(principal, job.id);
    const bytes = await this.store.getBytes(job.paramsKey, this.settings.maxDocumentBytes).catch((e: Error) => {
      throw DomainError.badInput(`api_param.json: ${e.message}`, "parameters");
    });
    if (!bytes) throw DomainError.badInput(`api_param.json: nothing was uploaded to s3://${this.settings.bucket}/${job.paramsKey}; PUT the WebUI parameters to api_params_s3_upload_url first`, "parameters");
    const params = parseWebUiJson(bytes.toString("utf8"));
    checkWebUiParameters(job.taskType as InferenceTaskType, params);
    await this.enqueue(job.id);
    return this.view(principal, job.id);
  }

  /** CREATED → QUEUED with the queue position, and the dispatch job. */
  private async enqueue(id: string): Promise<void> {
    const queued = await this.events.transaction(async (tx, events) => {
      const job = await tx.getRepository(InferenceEntity).createQueryBuilder("i").setLock("pessimistic_write").where("i.id = :id", { id }).getOne();
      if (!job || job.status !== "CREATED") return false;
      const queuedAt = new Date();
      await tx.update(InferenceEntity, { id }, { status: "QUEUED", queuedAt });
      const endpoint = await tx.getRepository(EndpointEntity).findOneBy({ id: job.endpointId });
      const standing = await this.standing(tx, { ...job, queuedAt }, endpoint);
      await tx.update(InferenceEntity, { id }, { lastPosition: standing.position });
      await appendInferenceEvent(events, id, job.creatorId, { type: "queued", data: { status: "QUEUED", ...this.standingData(standing) } });
      return true;
    });
    if (queued) await this.queue.enqueue("inference.dispatch", { inferenceId: id }, inferenceJobIds.dispatch(id));
  }

  /** Cancels: a queued job at once; a dispatched one is marked and its output discarded when it comes. */
  async cancel(principal: Principal, id: unknown): Promise<CancelOutcome> {
    const job = await this.writable(principal, parseInput(idSchema, id, "id"));
    if (isFinal(job.status)) return { inference: await this.view(principal, job.id), cancelled: false, message: `inference ${job.id} already finished (${job.status}); nothing to cancel` };
    const wasDispatched = job.invoked || job.status === "DISPATCHED" || job.status === "RUNNING";
    const reason = wasDispatched
      ? "cancelled after it was sent to the endpoint: SageMaker cannot withdraw an accepted invocation, so compute may still be spent; its output will be discarded"
      : "cancelled before it was sent to the endpoint";
    const endpoint = await this.db.getRepository(EndpointEntity).findOneBy({ id: job.endpointId });
    const onWebUi = endpoint?.provider === "webui";
    const webUiReason = wasDispatched || job.invokeStartedAt ? "cancelled while it ran on the WebUI server" : reason;
    const done = await this.transition(job.id, "CANCELLED", { cancelRequested: true, completedAt: new Date() }, { reason: onWebUi ? webUiReason : reason, requestedBy: principal.username }, "cancelled");
    const after = await this.view(principal, job.id);
    if (!done) return { inference: after, cancelled: false, message: `inference ${job.id} already finished (${after.status}); nothing to cancel` };
    if (onWebUi && endpoint && (wasDispatched || job.invokeStartedAt)) {
      // After the transition, so that the run sees the cancellation and discards what the server returns.
      const interrupted = await this.webUi!.interruptIfRunning(job, endpoint).catch((e: Error) => `the server could not be interrupted: ${e.message}`);
      return { inference: after, cancelled: true, message: `${webUiReason}; ${interrupted}` };
    }
    return { inference: after, cancelled: true, message: onWebUi ? webUiReason : reason };
  }

  /** Deletes jobs (all or none): their rows and every object (parameters, payload, previews, results, output documents). */
  async delete(principal: Principal, ids: unknown): Promise<string[]> {
    const list = [...new Set(parseInput(z.array(idSchema, { error: "must be a list of inference ids" }).min(1, { error: "must name at least one inference" }).max(100, { error: "at most 100 at once" }), ids, "ids"))];
    const jobs = await Promise.all(list.map((id) => this.writable(principal, id)));
    for (const j of jobs) {
      await this.store.deletePrefix(`${j.taskType}/infer_v2/${j.id}/`);
      await this.store.deletePrefix(inferenceKeys(j.taskType, j.id).resultPrefix.replace(/result\/$/, ""));
      for (const loc of [j.outputLocation, j.failureLocation]) {
        const key = keyOf(loc, this.settings.bucket);
        if (key) await this.store.deleteObject(key);
      }
      await this.db.getRepository(InferenceEntity).delete({ id: j.id });
    }
    return list;
  }

  /** Fails the not-yet-dispatched jobs of an endpoint that is being deleted. */
  async failQueuedForEndpoint(endpointId: string, endpointName: string): Promise<number> {
    const jobs = await this.db.getRepository(InferenceEntity).findBy({ endpointId, status: In(["CREATED", "QUEUED"]) });
    let failed = 0;
    for (const j of jobs) {
      const reason = `endpoint ${endpointName} was deleted before the job was dispatched`;
      if (await this.transition(j.id, "FAILED", { failureReason: reason, completedAt: new Date() }, { reason }, "failed")) failed++;
    }
    return failed;
  }

  // ---------------------------------------------------------------- checks

  private async usableEndpoint(principal: Principal, name: string): Promise<EndpointEntity> {
    const qb = this.db.getRepository(EndpointEntity).createQueryBuilder("e").where("e.name = :name AND e.status <> 'Deleted'", { name });
    if (!principal.permissions.allows("sagemaker_endpoint", "all") && !principal.permissions.allows("inference", "all")) {
      qb.andWhere("(e.owner_roles && :roles OR e.creator_id = :me)", { roles: principal.roles, me: principal.userId });
    }
    const e = await qb.getOne();
    if (!e) throw DomainError.badInput(`endpointName: endpoint "${name}" not found (or not shared with your roles)`, "endpointName");
    if (e.provider === "webui") {
      // A server that was up and is out of service for now keeps its queue: jobs wait for it to return.
      if (e.status !== "InService" && !(e.status === "Failed" && e.inServiceAt)) throw DomainError.conflict(`WebUI endpoint ${e.name} is not ready with status: ${e.status}${e.failureReason ? ` (${e.failureReason})` : ""}`, "endpointName");
      return e;
    }
    if (e.endpointType !== "Async") throw DomainError.badInput(`endpointName: endpoint "${name}" is ${e.endpointType}; only Async endpoints run queued inferences`, "endpointName");
    if (e.status !== "InService" && e.status !== "Updating") throw DomainError.conflict(`sagemaker endpoint is not ready with status: ${e.status}`, "endpointName");
    return e;
  }

  /**
   * Every task type runs on a WebUI server (rembg needs its rembg extension). A WebUI server uses its
   * own checkpoint files: the Stable-diffusion model names one of the models
   * it offered at its last health check (title, name or file name); other model types are named in
   * the prompt or the parameters, as on the server itself; a VAE (other than Automatic/None) is
   * passed as the server's `sd_vae` setting for the request.
   */
  private webUiModels(endpoint: EndpointEntity, models: Record<string, string[]>): UsedModels {
    const used: UsedModels = {};
    for (const [type, all] of Object.entries(models)) {
      // The WebUI extension always sends VAE Automatic (or None): the server's own choice.
      const names = type === "VAE" ? all.filter((n) => n !== "None" && n !== "Automatic") : all;
      if (!names.length) continue;
      if (type === "VAE") {
        if (names.length > 1) throw DomainError.badInput("models.VAE: name one VAE", "models.VAE");
        used[type] = [{ id: "", model_name: names[0]!, s3: "", type }];
        continue;
      }
      if (type !== "Stable-diffusion") throw DomainError.badInput(`models.${type}: a WebUI server uses its own ${type} files; name them in the prompt or parameters (only models.Stable-diffusion chooses the checkpoint)`, `models.${type}`);
      if (names.length > 1) throw DomainError.badInput("models.Stable-diffusion: name one checkpoint", "models.Stable-diffusion");
      const title = this.webUi?.serverModel(endpoint, names[0]!);
      if (!title) throw DomainError.badInput(`models: checkpoint ${names[0]} is not offered by ${endpoint.name} (it has: ${endpoint.serverModels.slice(0, 20).join(", ") || "none"})`, "models");
      used[type] = [{ id: "", model_name: title, s3: "", type }];
    }
    return used;
  }

  /** Every named model must be an Active checkpoint of that type the caller may use (VAE None/Automatic need none). */
  private async usedModels(principal: Principal, models: Record<string, string[]>): Promise<UsedModels> {
    const used: UsedModels = {};
    const missing: string[] = [];
    const vis = visibleToCaller(principal, "checkpoint", "c");
    for (const [type, names] of Object.entries(models)) {
      if (!(CHECKPOINT_TYPES as readonly string[]).includes(type)) throw DomainError.badInput(`models.${type}: unknown checkpoint type; expected ${CHECKPOINT_TYPES.join(", ")}`, `models.${type}`);
      const wanted = names.filter((n) => !(type === "VAE" && (n === "None" || n === "Automatic")));
      if (!wanted.length) continue;
      const rows: Array<{ id: string; name: string; prefix: string }> = await this.db
        .getRepository(CheckpointFileEntity)
        .createQueryBuilder("f")
        .innerJoin(CheckpointEntity, "c", "c.id = f.checkpoint_id")
        .select(["c.id AS id", "f.name AS name", "c.prefix AS prefix"])
        .where("f.checkpoint_type = :type AND f.name IN (:...names) AND c.status = 'Active'", { type, names: wanted })
        .andWhere(vis.sql, vis.params)
        .getRawMany();
      used[type] = wanted.flatMap((n) => {
        const row = rows.find((r) => r.name === n);
        if (!row) {
          missing.push(`checkpoint with name ${n}, type ${type} is not found`);
          return [];
        }
        return [{ id: row.id, model_name: n, s3: `s3://${this.settings.bucket}/${row.prefix.replace(/\/$/, "")}`, type }];
      });
    }
    if (missing.length) throw DomainError.badInput(`models: ${missing.join("; ")} (or not active, or not shared with you)`, "models");
    return used;
  }

  // ---------------------------------------------------------------- workflows (job bodies)

  /**
   * Takes the job through its endpoint's gate, then runs it: on SageMaker, writes the payload (once)
   * and invokes the endpoint (once recorded), then hands over to the watch job; on a WebUI server,
   * the runner holds the job until the server answers. Returns when to look again, if it must.
   */
  async dispatch(id: string): Promise<{ recheckInMs?: number }> {
    let job = await this.load(id);
    if (!job || (job.status !== "QUEUED" && job.status !== "DISPATCHED" && job.status !== "RUNNING")) return {};
    const endpoint = await this.db.getRepository(EndpointEntity).findOneBy({ id: job.endpointId });
    const gone = !endpoint || endpoint.status === "Deleting" || endpoint.status === "Deleted" || (endpoint.status === "Failed" && endpoint.provider === "sagemaker");
    if (!job.invoked && gone) {
      await this.failForGoneEndpoint(job, endpoint);
      return {};
    }
    if (job.status === "QUEUED" && !job.slotClaimedAt) {
      const waiting = await this.claimSlot(id);
      if (waiting) return { recheckInMs: this.recheckFor(waiting) };
      // The line moved: the jobs behind announce their new places.
      void this.wakeWaiting(job.endpointId).catch((err: unknown) => this.log.warn({ err, inference: id }, "waking the next jobs failed; they look again on their own"));
      job = (await this.load(id))!;
      if (job.status !== "QUEUED") return {};
    }
    if (endpoint!.provider === "webui") {
      // The run holds a worker slot while the server generates: it goes to the WebUI queue's worker.
      await this.queue.enqueue("inference.webui-run", { inferenceId: id }, inferenceJobIds.webUiRun(id));
      return {};
    }
    return this.dispatchToSageMaker(job, endpoint!);
  }

  /**
   * Gives every unfinished job its BullMQ job back when that was lost: failed for good (a worker that
   * kept dying on it, an outage longer than its retries) or gone. Without this such a job would keep
   * its endpoint's slot forever. Waiting, parked and running jobs are left alone; each step is
   * repeatable, so a job that is re-added after all only looks once more.
   */
  async resumeUnfinished(): Promise<number> {
    const rows = (await this.db.query(
      `SELECT i.id, i.status, i.slot_claimed_at IS NOT NULL AS "slotClaimed", e.provider
         FROM inferences i LEFT JOIN endpoints e ON e.id = i.endpoint_id
        WHERE i.status IN ('QUEUED', 'DISPATCHED', 'RUNNING')`,
    )) as Array<{ id: string; status: InferenceStatus; slotClaimed: boolean; provider: string | null }>;
    for (const r of rows) {
      const payload = { inferenceId: r.id };
      if (r.provider === "webui" && (r.slotClaimed || r.status !== "QUEUED")) await this.queue.ensure("inference.webui-run", payload, inferenceJobIds.webUiRun(r.id));
      else if (r.status === "QUEUED") await this.queue.ensure("inference.dispatch", payload, inferenceJobIds.dispatch(r.id));
      else await this.queue.ensure("inference.watch", payload, inferenceJobIds.watch(r.id));
    }
    return rows.length;
  }

  /** Runs a job that holds its slot on a WebUI server, to the end (the WebUI queue's job body). */
  async runOnWebUi(id: string): Promise<{ recheckInMs?: number }> {
    const job = await this.load(id);
    if (!job || !job.slotClaimedAt || (job.status !== "QUEUED" && job.status !== "DISPATCHED" && job.status !== "RUNNING")) return {};
    const endpoint = await this.db.getRepository(EndpointEntity).findOneBy({ id: job.endpointId });
    if (!endpoint || endpoint.status === "Deleting" || endpoint.status === "Deleted") {
      await this.failForGoneEndpoint(job, endpoint);
      return {};
    }
    if (!this.webUi) throw new Error("no WebUI executor is wired");
    return this.webUi.run(job, endpoint);
  }

  private async failForGoneEndpoint(job: InferenceEntity, endpoint: EndpointEntity | null): Promise<void> {
    const reason = `endpoint ${job.endpointName} is ${endpoint?.status ?? "gone"}; the job cannot run`;
    await this.transition(job.id, "FAILED", { failureReason: reason, completedAt: new Date() }, { reason }, "failed");
  }

  private async dispatchToSageMaker(job: InferenceEntity, endpoint: EndpointEntity): Promise<{ recheckInMs?: number }> {
    const id = job.id;
    if (!job.payloadWritten) {
      const token = randomBytes(24).toString("base64url");
      const payload = {
        task: job.taskType,
        username: job.creatorId ?? "",
        param_s3: `s3://${this.settings.bucket}/${job.paramsKey}`,
        models: job.taskType === "txt2img" || job.taskType === "img2img" ? { space_free_size: 40_000_000_000.0, ...job.models } : {},
        progress: { url: `${this.settings.publicUrl}/internal/inferences/${id}/progress`, token, every: this.settings.previewEvery },
      };
      await this.store.putObject(job.payloadKey, JSON.stringify(payload), "application/json");
      await this.db.getRepository(InferenceEntity).update({ id }, { payloadWritten: true, progressTokenHash: sha256(token) });
      job = (await this.load(id))!;
    }
    if (!job.invoked) {
      if (job.status !== "QUEUED") return {};
      const locations = asyncOutputLocations(this.settings.bucket, endpoint.name);
      if (job.invokeStartedAt) {
        // A worker died between calling the endpoint and recording it. SageMaker names the output after
        // the InferenceId: an output or failure document there proves the call went through.
        const [output, failure] = [locations.output(id), locations.failure(id)];
        const evidence = (await this.store.head(keyOf(output, this.settings.bucket)!)) ?? (await this.store.head(keyOf(failure, this.settings.bucket)!));
        if (evidence) {
          await this.db.getRepository(InferenceEntity).update({ id }, { invoked: true, outputLocation: output, failureLocation: failure });
          await this.transition(id, "DISPATCHED", { dispatchedAt: job.invokeStartedAt }, { endpointName: job.endpointName, recovered: "the invocation was accepted before the worker stopped" }, "dispatched");
          await this.queue.enqueue("inference.watch", { inferenceId: id }, inferenceJobIds.watch(id));
          return {};
        }
        // No evidence yet: invoking again with the same InferenceId may compute twice but never loses
        // the job; both runs write the same output key, and the job collects it once.
        await this.note(job, "redispatched", { reason: "the worker stopped while invoking the endpoint; invoking again with the same InferenceId" });
      }
      await this.db.getRepository(InferenceEntity).update({ id }, { invokeStartedAt: new Date() });
      try {
        const out = await this.invoker.invoke({
          endpointName: job.endpointName,
          inputLocation: `s3://${this.settings.bucket}/${job.payloadKey}`,
          inferenceId: id,
          invocationTimeoutSeconds: this.settings.invocationTimeoutSeconds,
          requestTtlSeconds: this.settings.requestTtlSeconds,
        });
        await this.db.getRepository(InferenceEntity).update({ id }, { invoked: true, outputLocation: out.outputLocation, failureLocation: out.failureLocation ?? null });
      } catch (e) {
        if (!(e instanceof SageMakerRequestError)) throw e;
        const reason = `SageMaker refused the invocation: ${e.message}`;
        await this.transition(id, "FAILED", { failureReason: reason, completedAt: new Date() }, { reason }, "failed");
        return {};
      }
      await this.transition(id, "DISPATCHED", { dispatchedAt: new Date() }, { endpointName: job.endpointName }, "dispatched");
    }
    await this.queue.enqueue("inference.watch", { inferenceId: id }, inferenceJobIds.watch(id));
    return {};
  }

  // ---------------------------------------------------------------- the gate

  /**
   * Jobs an endpoint is given at once: one per WebUI server; on SageMaker, instances × (concurrency +
   * queue-ahead), and one to wake an endpoint scaled to zero (its backlog alarm scales it up).
   */
  private capacityOf(endpoint: EndpointEntity | null): number {
    if (!endpoint) return 0;
    if (endpoint.provider === "webui") return endpoint.status === "InService" ? 1 : 0;
    return Math.max(1, endpoint.currentInstanceCount * (this.settings.maxConcurrentInvocationsPerInstance + this.settings.queueAheadPerInstance));
  }

  /** Position of a queued job: waiting jobs queued before it, plus what holds the endpoint's slots. */
  private async standing(tx: EntityManager, job: Pick<InferenceEntity, "id" | "endpointId" | "endpointName" | "queuedAt">, endpoint: EndpointEntity | null): Promise<QueueStanding> {
    const [counts] = (await tx.query(
      `SELECT count(*) FILTER (WHERE status IN ('DISPATCHED', 'RUNNING') OR (status = 'QUEUED' AND slot_claimed_at IS NOT NULL))::int AS in_flight,
              count(*) FILTER (WHERE status = 'QUEUED' AND slot_claimed_at IS NULL AND (queued_at, id) < ($2, $3))::int AS ahead
         FROM inferences WHERE endpoint_id = $1 AND status IN ('QUEUED', 'DISPATCHED', 'RUNNING')`,
      [job.endpointId, job.queuedAt ?? new Date(), job.id],
    )) as [{ in_flight: number; ahead: number }];
    const { in_flight: inFlight, ahead } = counts;
    const capacity = this.capacityOf(endpoint);
    const position = ahead + 1;
    let reason: string | undefined;
    if (endpoint?.provider === "webui" && endpoint.status !== "InService") reason = `WebUI server ${endpoint.name} is out of service (${endpoint.failureReason ?? endpoint.status}); the job waits until it answers again`;
    else if (endpoint?.provider === "sagemaker" && endpoint.currentInstanceCount === 0) reason = `endpoint ${job.endpointName} has no instances running; the first job wakes it and the rest wait until it scales up`;
    else if (ahead + inFlight >= capacity) reason = `endpoint ${job.endpointName} is busy (${inFlight} of ${capacity} running)`;
    return { position, ahead, capacity, inFlight, ...(reason ? { reason } : {}) };
  }

  private standingData(st: QueueStanding): Record<string, unknown> {
    return { position: st.position, ahead: st.ahead, capacity: st.capacity, inFlight: st.inFlight, waitingForCapacity: st.ahead + st.inFlight >= st.capacity, ...(st.reason ? { reason: st.reason } : {}) };
  }

  /**
   * Takes one of the endpoint's slots for a queued job when it is first in line and a slot is free
   * (under the endpoint's row lock, so that concurrent dispatchers never hand out a slot twice).
   * Otherwise returns its standing, announcing a changed position.
   */
  private async claimSlot(id: string): Promise<QueueStanding | undefined> {
    return this.events.transaction(async (tx, events) => {
      const peek = await tx.getRepository(InferenceEntity).findOneBy({ id });
      if (!peek) return undefined;
      const endpoint = await tx.getRepository(EndpointEntity).createQueryBuilder("e").setLock("pessimistic_write").where("e.id = :id", { id: peek.endpointId }).getOne();
      const job = await tx.getRepository(InferenceEntity).createQueryBuilder("i").setLock("pessimistic_write").where("i.id = :id", { id }).getOne();
      if (!job || job.status !== "QUEUED" || job.slotClaimedAt) return undefined;
      const st = await this.standing(tx, job, endpoint);
      if (st.ahead + st.inFlight < st.capacity) {
        await tx.update(InferenceEntity, { id }, { slotClaimedAt: new Date() });
        return undefined;
      }
      if (st.position !== job.lastPosition) {
        await tx.update(InferenceEntity, { id }, { lastPosition: st.position });
        await appendInferenceEvent(events, id, job.creatorId, { type: "position", data: { status: "QUEUED", ...this.standingData(st) } });
      }
      return st;
    });
  }

  /** The first waiting jobs are woken when a slot frees; the rest look again later, the further back the later. */
  private recheckFor(st: QueueStanding): number {
    return Math.min(60_000, this.settings.dispatchRecheckMs * Math.max(1, Math.ceil(st.position / WAKE_AHEAD)));
  }

  /** Wakes the next waiting jobs of an endpoint (a slot freed, the queue moved, the server came back). */
  async wakeWaiting(endpointId: string): Promise<void> {
    const next = await this.db.getRepository(InferenceEntity).find({
      select: { id: true },
      where: { endpointId, status: "QUEUED" },
      order: { queuedAt: "ASC", id: "ASC" },
      take: WAKE_AHEAD,
    });
    await Promise.all(next.map((j) => this.queue.wake("inference.dispatch", inferenceJobIds.dispatch(j.id))));
  }

  /** One look at the output and failure locations; collects the result, or asks to look again later. */
  async watch(id: string): Promise<{ recheckInMs?: number }> {
    const job = await this.load(id);
    if (!job || !job.invoked || job.status === "SUCCEEDED" || job.status === "FAILED") return {};
    const outputKey = keyOf(job.outputLocation, this.settings.bucket);
    const failureKey = keyOf(job.failureLocation, this.settings.bucket);
    const output = outputKey ? await this.store.head(outputKey) : undefined;
    const failure = !output && failureKey ? await this.store.head(failureKey) : undefined;
    if (job.status === "CANCELLED") {
      // The output of a cancelled job is discarded when it arrives.
      if (output && outputKey) await this.store.deleteObject(outputKey);
      if (failure && failureKey) await this.store.deleteObject(failureKey);
      if (output || failure || this.timedOut(job)) return {};
    } else if (output && outputKey) {
      await this.collect(job, outputKey);
      return {};
    } else if (failure && failureKey) {
      const bytes = await this.store.getBytes(failureKey, this.settings.maxDocumentBytes);
      const text = bytes?.toString("utf8") ?? "";
      let reason = text.trim() || "the endpoint wrote an empty failure document";
      try {
        // SageMaker's failure document, or the emulator's {error, detail}: keep the container's words.
        const doc = parseWebUiJson(text) as { error?: unknown; detail?: unknown } | null;
        if (doc && typeof doc.detail === "string") reason = typeof doc.error === "string" ? `${doc.error}: ${doc.detail}` : doc.detail;
        else if (doc && typeof doc.error === "string") reason = doc.error;
      } catch {
        // not JSON: keep the text
      }
      await this.transition(id, "FAILED", { failureReason: reason.slice(0, 8000), completedAt: new Date() }, { reason: reason.slice(0, 8000) }, "failed");
      return {};
    } else if (this.timedOut(job)) {
      const reason = `no output from endpoint ${job.endpointName} after ${Math.round(this.settings.outputTimeoutMs / 1000)} s (looked at ${job.outputLocation})`;
      await this.transition(id, "FAILED", { failureReason: reason, completedAt: new Date() }, { reason }, "failed");
      return {};
    }
    await this.db.getRepository(InferenceEntity).increment({ id }, "outputChecks", 1);
    // The busy pace when the output is imminent (the container reported its last step) or when jobs
    // wait behind this one (its slot frees when the output is seen); else back off.
    const imminent = job.totalSteps !== null && job.lastStep >= job.totalSteps;
    if (imminent || (await this.db.getRepository(InferenceEntity).exists({ where: { endpointId: job.endpointId, status: "QUEUED" } }))) {
      return { recheckInMs: Math.min(this.settings.watchBusyMs, this.settings.watchInitialMs) };
    }
    return { recheckInMs: Math.min(30_000, Math.round(this.settings.watchInitialMs * 1.5 ** Math.min(job.outputChecks, 20))) };
  }

  /**
   * SageMaker's async notification (SNS, already verified): one look at the job's locations, as the
   * watch job does. Repeated or late notifications change nothing.
   */
  async notified(message: unknown): Promise<{ inferenceId: string | null; handled: boolean }> {
    const m = (typeof message === "object" && message !== null ? message : {}) as { inferenceId?: unknown; invocationStatus?: unknown };
    const id = typeof m.inferenceId === "string" && z.uuid().safeParse(m.inferenceId).success ? m.inferenceId : null;
    if (!id) return { inferenceId: null, handled: false };
    const job = await this.load(id);
    if (!job || !job.invoked) return { inferenceId: id, handled: false };
    await this.watch(id);
    return { inferenceId: id, handled: true };
  }

  private timedOut(job: InferenceEntity): boolean {
    return Date.now() - (job.dispatchedAt ?? job.queuedAt ?? job.createdAt).getTime() > this.settings.outputTimeoutMs;
  }

  /** Parses the `.out` document (§7 step 5) and stores images and the parameter file (§7 step 6). Repeatable. */
  private async collect(job: InferenceEntity, outputKey: string): Promise<void> {
    let doc: unknown;
    try {
      const bytes = await this.store.getBytes(outputKey, this.settings.maxDocumentBytes);
      doc = parseWebUiJson(bytes?.toString("utf8") ?? "null");
    } catch (e) {
      const reason = `the output could not be processed: ${(e as Error).message}`;
      await this.transition(job.id, "FAILED", { failureReason: reason, completedAt: new Date() }, { reason }, "failed");
      return;
    }
    await this.complete(job, doc);
  }

  /**
   * Stores a WebUI answer (`{images, parameters, info}`, as the container's `.out` or a WebUI server
   * returns it) as the job's result and ends the job SUCCEEDED; a cancelled job stays cancelled.
   */
  async complete(job: InferenceEntity, document: unknown): Promise<void> {
    const keys = inferenceKeys(job.taskType, job.id);
    const images: string[] = [];
    let paramFile: Record<string, unknown>;
    try {
      const doc = document as Record<string, unknown> | null;
      if (doc === null || typeof doc !== "object") throw new Error("the endpoint returned null (an error inside the container)");
      const raw = Array.isArray(doc.images) ? doc.images : typeof doc.image === "string" ? [doc.image] : [];
      const single = !Array.isArray(doc.images);
      for (const [n, value] of raw.entries()) {
        const key = single ? `${keys.resultPrefix}image.png` : keys.image(n);
        await this.store.putObject(key, decodeImage(value, n), "image/png");
        images.push(key);
      }
      paramFile = single
        ? { ...(doc.html_info !== undefined ? { html_info: doc.html_info } : {}), endpont_name: job.endpointName, inference_id: job.id }
        : { parameters: doc.parameters ?? null, info: doc.info ?? null, endpont_name: job.endpointName, inference_id: job.id };
      await this.store.putObject(keys.paramFile, JSON.stringify(paramFile), "application/json");
    } catch (e) {
      const reason = `the output could not be processed: ${(e as Error).message}`;
      await this.transition(job.id, "FAILED", { failureReason: reason, completedAt: new Date() }, { reason }, "failed");
      return;
    }
    // A job cancelled meanwhile stays cancelled (the transition is refused).
    await this.transition(job.id, "SUCCEEDED", { imageKeys: images, paramFileKey: keys.paramFile, completedAt: new Date() }, { imageKeys: images, paramFileKey: keys.paramFile }, "succeeded");
  }

  /**
   * A progress callback from the container (docs/progress-callback.md): checked against the job's
   * token, step only forwards; the first one moves a DISPATCHED job to RUNNING (later ones are hints), preview stored small.
   */
  async progress(id: string, token: string | undefined, body: unknown): Promise<void> {
    const parsedId = z.uuid().safeParse(id);
    const job = parsedId.success ? await this.load(parsedId.data) : null;
    if (!job || isFinal(job.status)) throw DomainError.notFound(`no running inference ${id}`);
    if (!token || !job.progressTokenHash || !timingSafeEqual(Buffer.from(sha256(token), "hex"), Buffer.from(job.progressTokenHash, "hex"))) {
      throw DomainError.unauthenticated("the progress token does not belong to this job");
    }
    const v = parseInput(progressSchema, body);
    let preview: Buffer | undefined;
    if (v.preview !== undefined) {
      const bytes = Buffer.from(v.preview, "base64");
      const size = pngSize(bytes);
      if (size && size.width <= 128 && size.height <= 128) preview = bytes;
    }
    await this.recordProgress(job, { step: v.step, totalSteps: v.total_steps, etaSeconds: v.eta_seconds ?? null, ...(preview ? { preview } : {}) });
  }

  /**
   * Records a step (only forwards): the first one moves a DISPATCHED job to RUNNING; a preview (a
   * small PNG) is stored under the job's prefix and named in the event.
   */
  async recordProgress(job: InferenceEntity, p: { step: number; totalSteps: number; etaSeconds: number | null; preview?: Buffer }): Promise<void> {
    const step = Math.min(p.step, p.totalSteps);
    if (step <= job.lastStep) return;
    let previewKey: string | undefined;
    if (p.preview) {
      previewKey = `${job.taskType}/infer_v2/${job.id}/preview-${step}.png`;
      await this.store.putObject(previewKey, p.preview, "image/png");
    }
    // Under the row lock: a callback racing with the job's end (or a cancel) records nothing after it.
    await this.events.transaction(async (tx, events) => {
      const current = await tx.getRepository(InferenceEntity).createQueryBuilder("i").setLock("pessimistic_write").where("i.id = :id", { id: job.id }).getOne();
      if (!current || isFinal(current.status) || step <= current.lastStep) return;
      // The first accepted callback of a dispatched job shows it running (DESIGN: RUNNING = progress seen).
      const starts = current.status === "DISPATCHED";
      await tx.update(InferenceEntity, { id: job.id }, { lastStep: step, totalSteps: p.totalSteps, ...(previewKey ? { previewKey } : {}), ...(starts ? { status: "RUNNING" as const } : {}) });
      if (starts) await appendInferenceEvent(events, job.id, current.creatorId, { type: "running", data: { status: "RUNNING", previous: "DISPATCHED", step, totalSteps: p.totalSteps } });
      await appendInferenceEvent(events, job.id, current.creatorId, { type: "progress", data: { step, totalSteps: p.totalSteps, etaSeconds: p.etaSeconds, ...(previewKey ? { previewKey } : {}) } });
    });
    // The last step: the output follows within moments, so the watch looks now rather than at its pace.
    // (The callback can beat the record of the invocation; waking a watch that is not parked is a no-op.)
    if (step >= p.totalSteps) await this.queue.wake("inference.watch", inferenceJobIds.watch(job.id)).catch(() => undefined);
  }

  // ---------------------------------------------------------------- reads

  private load(id: string): Promise<InferenceEntity | null> {
    return this.db.getRepository(InferenceEntity).findOneBy({ id });
  }

  /** A job the caller may act on: their own, or any with inference:all. */
  private async writable(principal: Principal, id: string): Promise<InferenceEntity> {
    const job = await this.load(id);
    if (!job || (job.creatorId !== principal.userId && !principal.permissions.allows("inference", "all"))) throw DomainError.notFound(`inference with id ${id} not found`);
    return job;
  }

  async view(principal: Principal, id: unknown): Promise<InferenceView> {
    const inferenceId = parseInput(idSchema, id, "id");
    const [found] = await this.query(principal, { ids: [inferenceId], limit: 1 });
    if (!found) throw DomainError.notFound(`inference with id ${inferenceId} not found`);
    return found;
  }

  /** Presigned GETs of the images and the parameter file (upstream's img/output_presigned_urls). */
  async resultUrls(v: InferenceView): Promise<{ images: string[]; outputs: string[]; preview: string | null }> {
    const ttl = this.settings.resultUrlTtlSeconds;
    return {
      images: await Promise.all(v.imageKeys.map((k) => this.store.presignGet(k, ttl))),
      outputs: v.paramFileKey ? [await this.store.presignGet(v.paramFileKey, ttl)] : [],
      preview: v.previewKey ? await this.store.presignGet(v.previewKey, ttl) : null,
    };
  }

  /**
   * A presigned GET of a job object. Events are resolved once per subscriber, so the same key is
   * asked for by every subscriber of a job: the URL is signed once and reused for a tenth of its
   * lifetime (it stays valid for at least 90% of the TTL when handed out).
   */
  async presignKey(key: string): Promise<string> {
    const now = Date.now();
    const cached = this.presigned.get(key);
    if (cached && cached.reuseUntil > now) return cached.url;
    const url = await this.store.presignGet(key, this.settings.resultUrlTtlSeconds);
    this.presigned.delete(key);
    this.presigned.set(key, { url, reuseUntil: now + this.settings.resultUrlTtlSeconds * 100 });
    // Oldest first (insertion order): a bounded cache, never a leak.
    if (this.presigned.size > PRESIGNED_CACHE_SIZE) this.presigned.delete(this.presigned.keys().next().value!);
    return url;
  }

  private readonly presigned = new Map<string, { url: string; reuseUntil: number }>();

  /** Keyset pagination, newest first. Users see their own jobs; inference:all sees everyone's (and may filter by user). */
  async list(principal: Principal, input: unknown): Promise<{ items: InferenceView[]; endCursor: string | null; hasNextPage: boolean }> {
    const v = parseInput(listSchema, input);
    if (v.username !== undefined && v.username !== principal.username && !principal.permissions.allows("inference", "all")) {
      throw DomainError.forbidden(`listing the inferences of "${v.username}" needs inference:all`);
    }
    const { after: rawAfter, first: _first, ...filter } = v;
    const after = rawAfter ? decodeKeysetCursor(rawAfter) : undefined;
    const rows = await this.query(principal, { ...filter, ...(after ? { after } : {}), limit: v.first + 1 });
    const items = rows.slice(0, v.first);
    return { items, hasNextPage: rows.length > v.first, endCursor: items.length ? encodeKeysetCursor(items.at(-1)!) : null };
  }

  private async query(
    principal: Principal,
    f: { ids?: string[]; statuses?: InferenceStatus[]; taskTypes?: string[]; endpointName?: string; createdAfter?: Date; createdBefore?: Date; username?: string; after?: KeysetCursor; limit: number },
  ): Promise<InferenceView[]> {
    const qb = this.db
      .getRepository(InferenceEntity)
      .createQueryBuilder("i")
      .leftJoin("users", "u", "u.id = i.creator_id")
      .addSelect("u.username", "creator_username")
      .orderBy("i.created_at", "DESC")
      .addOrderBy("i.id", "DESC")
      .limit(f.limit);
    if (!principal.permissions.allows("inference", "all")) qb.andWhere("i.creator_id = :me", { me: principal.userId });
    if (f.ids) qb.andWhere("i.id IN (:...ids)", { ids: f.ids });
    if (f.statuses?.length) qb.andWhere("i.status IN (:...statuses)", { statuses: f.statuses });
    if (f.taskTypes?.length) qb.andWhere("i.task_type IN (:...taskTypes)", { taskTypes: f.taskTypes });
    if (f.endpointName) qb.andWhere("i.endpoint_name = :endpointName", { endpointName: f.endpointName });
    if (f.createdAfter) qb.andWhere("i.created_at >= :createdAfter", { createdAfter: f.createdAfter });
    if (f.createdBefore) qb.andWhere("i.created_at < :createdBefore", { createdBefore: f.createdBefore });
    if (f.username) qb.andWhere("u.username = :username", { username: f.username });
    if (f.after) qb.andWhere("(i.created_at, i.id) < (:afterAt, :afterId)", { afterAt: f.after.createdAt, afterId: f.after.id });
    const { entities, raw } = await qb.getRawAndEntities();
    return entities.map((i, n) => ({
      id: i.id,
      taskType: i.taskType,
      status: i.status,
      endpointId: i.endpointId,
      endpointName: i.endpointName,
      creator: (raw[n] as { creator_username: string | null }).creator_username ?? null,
      creatorId: i.creatorId,
      ownerRoles: i.ownerRoles,
      models: i.models as UsedModels,
      paramsKey: i.paramsKey,
      outputLocation: i.outputLocation,
      failureLocation: i.failureLocation,
      imageKeys: i.imageKeys,
      paramFileKey: i.paramFileKey,
      failureReason: i.failureReason,
      lastStep: i.lastStep,
      totalSteps: i.totalSteps,
      previewKey: i.previewKey,
      cancelRequested: i.cancelRequested,
      queuePosition: i.status === "QUEUED" && !i.slotClaimedAt ? i.lastPosition : null,
      createdAt: i.createdAt,
      queuedAt: i.queuedAt,
      dispatchedAt: i.dispatchedAt,
      completedAt: i.completedAt,
    }));
  }

  async follow(principal: Principal, id: unknown, after: unknown): Promise<AsyncIterableIterator<StoredEvent>> {
    const job = await this.view(principal, id);
    return this.events.followFrom(job.id, after, "the inference's");
  }

  /**
   * Every event of the caller's own inference jobs after `after` (a position in the caller's stream,
   * 0 = from the start), then live ones, in order, without gaps or duplicates.
   */
  async followMine(principal: Principal, after: unknown): Promise<AsyncIterableIterator<StoredEvent>> {
    const streamId = userInferenceStreamId(principal.userId);
    // Opened here too, so that a subscriber with no jobs yet gets the live ones.
    await this.events.transaction((_tx, events) => events.openStream(streamId, "user_inferences", principal.userId));
    return this.events.followFrom(streamId, after, "your inferences\'");
  }

  /** Ends a job FAILED with the reason (refused when it already ended). */
  fail(id: string, reason: string): Promise<boolean> {
    return this.transition(id, "FAILED", { failureReason: reason.slice(0, 8000), completedAt: new Date() }, { reason: reason.slice(0, 8000) }, "failed");
  }

  /** Moves a queued job whose slot was taken to DISPATCHED (a WebUI server took it). */
  markDispatched(id: string, data: Record<string, unknown>): Promise<boolean> {
    return this.transition(id, "DISPATCHED", { dispatchedAt: new Date() }, data, "dispatched");
  }

  /** Records a job event that changes no status (a retry, a lost server). */
  async note(job: Pick<InferenceEntity, "id" | "creatorId">, type: string, data: Record<string, unknown>): Promise<void> {
    await this.events.transaction((_tx, events) => appendInferenceEvent(events, job.id, job.creatorId, { type, data }));
  }

  async reload(id: string): Promise<InferenceEntity | null> {
    return this.load(id);
  }

  /**
   * Changes status under the row lock if allowed; records the event (terminal for final states).
   * A job that ends frees its endpoint slot (or its place in line): the next waiting jobs are woken.
   */
  private async transition(id: string, to: InferenceStatus, patch: Partial<Omit<InferenceEntity, "models">>, data: Record<string, unknown>, type: string): Promise<boolean> {
    const endpointId = await this.events.transaction(async (tx, events) => {
      const job = await tx.getRepository(InferenceEntity).createQueryBuilder("i").setLock("pessimistic_write").where("i.id = :id", { id }).getOne();
      if (!job || job.status === to || !canTransition(job.status, to)) return undefined;
      await tx.update(InferenceEntity, { id }, { ...patch, status: to });
      await appendInferenceEvent(events, id, job.creatorId, { type, data: { status: to, previous: job.status, ...data }, terminal: isFinal(to) });
      return job.endpointId;
    });
    if (endpointId === undefined) return false;
    if (isFinal(to)) await this.wakeWaiting(endpointId).catch((err: unknown) => this.log.warn({ err, inference: id }, "waking the next jobs failed; they look again on their own"));
    return true;
  }
}
