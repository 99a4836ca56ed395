import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import { In, type DataSource } from "typeorm";
import { z } from "zod";
import { endpointJobIds } from "../../queues/job-types.js";
import type { JobQueue } from "../../queues/job-queue.js";
import { ECR_IMAGE } from "../config.js";
import { EndpointEntity } from "../adapters/db/entities/endpoint.entity.js";
import { RoleEntity } from "../adapters/db/entities/role.entity.js";
import { SageMakerRequestError, type EndpointProvisioner, type EndpointSpec } from "../adapters/sagemaker/endpoint-provisioner.js";
import { classifyAddress, systemResolver, type Resolver } from "../adapters/http/guarded-download.js";
import type { CredentialSealer } from "../adapters/security/credential-sealer.js";
import { WebUiRefused, WebUiUnreachable, type WebUiClient, type WebUiServer } from "../adapters/webui/webui-client.js";
import { ENDPOINT_INSTANCE_TYPES, MAX_INSTANCES, asyncOutputLocations, canTransition, sagemakerNames, webUiEndpointName, type EndpointStatus } from "../domain/endpoints.js";
import { DomainError } from "../domain/errors.js";
import type { StoredEvent } from "../domain/events.js";
import type { Principal } from "../domain/principal.js";
import { parseInput } from "../domain/validation.js";
import type { EventLog } from "./event-log.js";

/** Where and how endpoints are built; resolved from configuration (and the emulator's defaults). */
export interface EndpointSettings {
  bucket: string;
  executionRoleArn: string | undefined;
  inferenceImage: string | undefined;
  modelDataUrl: string;
  successTopicArn: string | undefined;
  errorTopicArn: string | undefined;
  maxConcurrentInvocationsPerInstance: number;
  deployTimeoutMs: number;
  /** Self-hosted WebUI servers: how long one health check may take. */
  webUiHealthTimeoutMs: number;
}

/** What an endpoint needs from outside SageMaker: a WebUI client and the sealer of its credentials. */
export interface WebUiAccess {
  client: WebUiClient;
  sealer: () => CredentialSealer;
  resolver?: Resolver;
}

/** An endpoint as callers see it: its sealed credentials never leave the service, only whether there are any. */
export type EndpointView = Omit<EndpointEntity, "credentialsSealed"> & { creator: string | null; hasCredentials: boolean };

const count = (field: string, min: number, max: number) =>
  z
    .union([z.number(), z.string().regex(/^\s*\d+\s*$/, { error: "must be a whole number" }).transform(Number)], { error: "must be a whole number" })
    .pipe(z.number().int({ error: "must be a whole number" }).min(min, { error: `${field} must be at least ${min}` }).max(max, { error: `${field} must be at most ${max}` }));

const deploySchema = z
  .object({
    endpointName: z
      .string({ error: "must be a string" })
      .regex(/^[A-Za-z0-9](-*[A-Za-z0-9]){0,19}$/, { error: "must be 1-20 letters, digits or single hyphens, starting and ending with a letter or digit" })
      .optional(),
    endpointType: z
      .string({ error: "must be a string" })
      .refine((t) => t !== "Serverless", { error: "Serverless endpoint is not supported yet" })
      .pipe(z.enum(["Async", "Real-time"], { error: "must be Async or Real-time" }))
      .optional(),
    instanceType: z.enum(ENDPOINT_INSTANCE_TYPES, { error: `must be one of ${ENDPOINT_INSTANCE_TYPES.join(", ")}` }),
    initialInstanceCount: count("initial_instance_count", 1, MAX_INSTANCES),
    autoscalingEnabled: z.boolean({ error: "must be true or false" }).optional(),
    minInstanceNumber: count("min_instance_number", 0, MAX_INSTANCES).optional(),
    maxInstanceNumber: count("max_instance_number", 1, MAX_INSTANCES).optional(),
    assignToRoles: z.array(z.string({ error: "must be a role name" }).min(1).max(64), { error: "must be a list of role names" }).min(1, { error: "must name at least one role" }).max(10, { error: "at most 10 roles" }).optional(),
    customDockerImageUri: z.string({ error: "must be a string" }).optional(),
    creator: z.string().optional(),
  })
  .strict();

const registerWebUiSchema = z
  .object({
    name: z.string({ error: "must be a string" }).regex(/^[A-Za-z0-9](-*[A-Za-z0-9]){0,19}$/, { error: "must be 1-20 letters, digits or single hyphens, starting and ending with a letter or digit" }),
    baseUrl: z
      .string({ error: "must be a URL" })
      .max(2048, { error: "must be at most 2048 characters" })
      .pipe(z.url({ protocol: /^https?$/, error: "must be an http(s) URL, like http://gpu-box:7860" }))
      .refine((u) => !/^[a-z]+:\/\/[^/]*@/i.test(u), { error: "must not carry credentials; pass username and password instead" })
      .refine((u) => !u.includes("?") && !u.includes("#"), { error: "must not have a query or fragment" })
      .transform((u) => u.replace(/\/+$/, "")),
    username: z.string({ error: "must be a string" }).min(1, { error: "must not be empty" }).max(256).regex(/^[^:]*$/, { error: "must not contain ':'" }).optional(),
    password: z.string({ error: "must be a string" }).min(1, { error: "must not be empty" }).max(1024).optional(),
    assignToRoles: z.array(z.string({ error: "must be a role name" }).min(1).max(64), { error: "must be a list of role names" }).min(1, { error: "must name at least one role" }).max(10, { error: "at most 10 roles" }).optional(),
  })
  .strict()
  .refine((v) => (v.username === undefined) === (v.password === undefined), { error: "give both username and password, or neither", path: ["password"] });

const namesSchema = z.array(z.string({ error: "must be an endpoint name" }).min(1).max(63), { error: "must be a list of endpoint names" }).min(1, { error: "must name at least one endpoint" }).max(100, { error: "at most 100 endpoints at once" });

const endpointNameSchema = z.string({ error: "must be an endpoint name" }).min(1, { error: "must not be empty" }).max(63, { error: "must be at most 63 characters" });

/** Backoff for looking at SageMaker again: 0.5 s growing by half each time, at most 30 s. */
export function recheckDelay(checks: number): number {
  return Math.min(30_000, Math.round(500 * 1.5 ** Math.min(checks, 20)));
}

/**
 * SageMaker endpoints: deploy (a queued, resumable workflow), list, read, delete, reconcile, and
 * their event streams.
 */
export class EndpointService {
  constructor(
    private readonly db: DataSource,
    private readonly events: EventLog,
    private readonly queue: JobQueue,
    private readonly provisioner: EndpointProvisioner,
    private readonly settings: EndpointSettings,
    private readonly webUi: WebUiAccess,
    private readonly log: Logger,
  ) {}

  private readonly deletingHooks: Array<(endpointId: string, endpointName: string) => Promise<void>> = [];

  private readonly backInServiceHooks: Array<(endpointId: string) => Promise<void>> = [];

  /** Runs `hook` when a WebUI server answers again after being out of service (its waiting jobs move). */
  onBackInService(hook: (endpointId: string) => Promise<void>): void {
    this.backInServiceHooks.push(hook);
  }

  /** Runs `hook` when an endpoint starts being deleted (the inference service fails its queued jobs). */
  onDeleting(hook: (endpointId: string, endpointName: string) => Promise<void>): void {
    this.deletingHooks.push(hook);
  }

  // ---------------------------------------------------------------- requests

  async deploy(principal: Principal, input: unknown): Promise<EndpointView> {
    const v = parseInput(deploySchema, input);
    if (v.creator !== undefined && v.creator !== principal.username) {
      throw DomainError.forbidden(`creator "${v.creator}" must be the calling user "${principal.username}"; identities are taken from credentials, not from the body`);
    }
    if (!principal.permissions.allows("sagemaker_endpoint", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" has no permission to create SageMaker endpoints (needs sagemaker_endpoint:create or sagemaker_endpoint:all)`);
    }
    const endpointType = v.endpointType ?? "Async";
    const isAsync = endpointType === "Async";
    const autoscaling = v.autoscalingEnabled ?? isAsync;
    if (autoscaling && !isAsync) throw DomainError.badInput("autoscalingEnabled: Autoscaling is not supported for real-time endpoint", "autoscalingEnabled");
    const minInstances = v.minInstanceNumber ?? (isAsync ? 0 : 1);
    const maxInstances = v.maxInstanceNumber ?? Math.max(v.initialInstanceCount, 1);
    if (!isAsync && minInstances < 1) throw DomainError.badInput("minInstanceNumber: must be at least 1 for a real-time endpoint", "minInstanceNumber");
    if (minInstances > maxInstances) throw DomainError.badInput(`minInstanceNumber: ${minInstances} is above maxInstanceNumber ${maxInstances}`, "minInstanceNumber");
    if (v.initialInstanceCount > maxInstances) throw DomainError.badInput(`initialInstanceCount: ${v.initialInstanceCount} is above maxInstanceNumber ${maxInstances}`, "initialInstanceCount");
    if (v.customDockerImageUri !== undefined && !ECR_IMAGE.test(v.customDockerImageUri)) {
      throw DomainError.badInput(`customDockerImageUri: Invalid docker image uri ${v.customDockerImageUri}`, "customDockerImageUri");
    }
    const roles = await this.assignedRoles(principal, v.assignToRoles);
    const image = v.customDockerImageUri ?? this.settings.inferenceImage;
    if (!image) throw DomainError.unavailable("no inference image is configured (INFERENCE_IMAGE_URI); pass custom_docker_image_uri or ask an operator");
    if (!this.settings.executionRoleArn) throw DomainError.unavailable("no SageMaker execution role is configured (SAGEMAKER_EXECUTION_ROLE_ARN); ask an operator");

    const shortName = v.endpointName ?? randomBytes(4).toString("hex").slice(0, 7);
    const names = sagemakerNames(endpointType, shortName);
    let saved: EndpointEntity;
    try {
      saved = await this.events.transaction(async (tx, events) => {
        const e = await tx.save(
          tx.create(EndpointEntity, {
            name: names.endpoint,
            endpointType,
            instanceType: v.instanceType,
            initialInstanceCount: v.initialInstanceCount,
            autoscaling,
            minInstanceNumber: minInstances,
            maxInstanceNumber: maxInstances,
            currentInstanceCount: 0,
            status: "Creating",
            ownerRoles: [...new Set(roles)],
            creatorId: principal.userId,
            imageUri: image,
            customImage: v.customDockerImageUri !== undefined,
            modelName: names.model,
            configName: names.config,
            failureReason: null,
          }),
        );
        await events.openStream(e.id, "endpoint", principal.userId);
        await events.append(e.id, { type: "status", data: { status: "Creating", endpointName: e.name } });
        return e;
      });
    } catch (e) {
      if ((e as { code?: string }).code === "23505") throw DomainError.conflict(`an endpoint named "${names.endpoint}" already exists`, "endpointName");
      throw e;
    }
    await this.queue.enqueue("endpoint.deploy", { endpointId: saved.id }, endpointJobIds.deploy(saved.id));
    return (await this.views({ ids: [saved.id] }))[0]!;
  }

  private async assignedRoles(principal: Principal, assignToRoles: string[] | undefined): Promise<string[]> {
    const roles = assignToRoles ?? principal.roles;
    if (roles.length === 0) throw DomainError.badInput("assignToRoles: name the roles that may use the endpoint (you hold none to default to)", "assignToRoles");
    const known = await this.db.getRepository(RoleEntity).findBy({ name: In(roles) });
    const missing = roles.filter((r) => !known.some((k) => k.name === r));
    if (missing.length) throw DomainError.badInput(`assignToRoles: role(s) ${missing.map((m) => `"${m}"`).join(", ")} do not exist`, "assignToRoles");
    return [...new Set(roles)];
  }

  /**
   * Registers a self-hosted WebUI server (AUTOMATIC1111, Forge, SD.Next: anything serving
   * `/sdapi/v1`). Its first health check runs at once and decides InService or Failed; the periodic
   * check moves it out of service and back. Credentials are sealed and never returned.
   */
  async registerWebUi(principal: Principal, input: unknown): Promise<EndpointView> {
    if (!principal.permissions.allows("sagemaker_endpoint", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" has no permission to register endpoints (needs sagemaker_endpoint:create or sagemaker_endpoint:all)`);
    }
    const v = parseInput(registerWebUiSchema, input);
    await this.vetServerAddress(v.baseUrl);
    const roles = await this.assignedRoles(principal, v.assignToRoles);
    const name = webUiEndpointName(v.name);
    let saved: EndpointEntity;
    try {
      saved = await this.events.transaction(async (tx, events) => {
        const e = await tx.save(
          tx.create(EndpointEntity, {
            name,
            provider: "webui",
            baseUrl: v.baseUrl,
            credentialsSealed: v.username !== undefined && v.password !== undefined ? this.webUi.sealer().seal(JSON.stringify({ username: v.username, password: v.password })) : null,
            endpointType: "Async",
            instanceType: "self-hosted",
            initialInstanceCount: 1,
            autoscaling: false,
            minInstanceNumber: 1,
            maxInstanceNumber: 1,
            currentInstanceCount: 0,
            status: "Creating",
            ownerRoles: roles,
            creatorId: principal.userId,
            imageUri: "",
            customImage: false,
            modelName: "",
            configName: "",
            failureReason: null,
          }),
        );
        await events.openStream(e.id, "endpoint", principal.userId);
        await events.append(e.id, { type: "status", data: { status: "Creating", endpointName: e.name, provider: "webui" } });
        return e;
      });
    } catch (e) {
      if ((e as { code?: string }).code === "23505") throw DomainError.conflict(`an endpoint named "${name}" already exists`, "name");
      throw e;
    }
    await this.checkWebUiHealth(saved.id);
    return (await this.views({ ids: [saved.id] }))[0]!;
  }

  /** Refuses addresses no server of ours lives at (cloud metadata, link-local, multicast…); private networks are fine. */
  private async vetServerAddress(baseUrl: string): Promise<void> {
    const host = new URL(baseUrl).hostname.replace(/^\[|\]$/g, "");
    let addresses: Array<{ address: string }>;
    try {
      addresses = await (this.webUi.resolver ?? systemResolver)(host);
    } catch {
      throw DomainError.badInput(`baseUrl: the host ${host} could not be resolved`, "baseUrl");
    }
    for (const a of addresses) {
      const c = classifyAddress(a.address);
      if (c.kind === "forbidden") throw DomainError.badInput(`baseUrl: ${host} resolves to an address no WebUI server may use (${c.range})`, "baseUrl");
    }
  }

  /** How to reach a WebUI endpoint's server (credentials opened). */
  webUiServer(e: Pick<EndpointEntity, "baseUrl" | "credentialsSealed" | "name">): WebUiServer {
    if (!e.baseUrl) throw new Error(`endpoint ${e.name} has no base URL`);
    if (!e.credentialsSealed) return { baseUrl: e.baseUrl };
    const c = JSON.parse(this.webUi.sealer().open(e.credentialsSealed)) as { username: string; password: string };
    return { baseUrl: e.baseUrl, credentials: c };
  }

  /**
   * One health check of a WebUI server: `/sdapi/v1/sd-models` answering moves it (back) to InService
   * and records the models it offers; no answer or a refusal moves it out of service (Failed, with
   * the reason). Changes are events on the endpoint's stream.
   */
  async checkWebUiHealth(id: string): Promise<EndpointStatus | undefined> {
    const e = await this.load(id);
    if (!e || e.provider !== "webui" || e.status === "Deleting" || e.status === "Deleted") return e?.status;
    let reason: string | undefined;
    let models: string[] = [];
    try {
      models = (await this.webUi.client.listModels(this.webUiServer(e), this.settings.webUiHealthTimeoutMs)).map((m) => m.title);
    } catch (err) {
      if (err instanceof WebUiUnreachable) reason = `the server at ${e.baseUrl} did not answer (${err.reason})`;
      else if (err instanceof WebUiRefused) reason = err.status === 401 || err.status === 403 ? `the server at ${e.baseUrl} refused the credentials (${err.status})` : `the server at ${e.baseUrl} answered ${err.status} to /sdapi/v1/sd-models: ${err.detail}`;
      else reason = `the server at ${e.baseUrl} could not be checked: ${(err as Error).message}`;
    }
    const now = new Date();
    if (reason === undefined) {
      const modelsChanged = models.join("\n") !== e.serverModels.join("\n");
      await this.db.getRepository(EndpointEntity).update({ id }, { healthFailures: 0, lastHealthAt: now, ...(modelsChanged ? { serverModels: models } : {}) });
      if (e.status !== "InService" && (await this.transition(id, "InService", { failureReason: null, currentInstanceCount: 1, ...(e.inServiceAt ? {} : { inServiceAt: now }) }, { models: models.length }))) {
        for (const hook of this.backInServiceHooks) await hook(id);
      }
      return "InService";
    }
    await this.db.getRepository(EndpointEntity).update({ id }, { healthFailures: e.healthFailures + 1, lastHealthAt: now });
    if (e.status !== "Failed") await this.transition(id, "Failed", { failureReason: reason, currentInstanceCount: 0 }, { reason });
    return "Failed";
  }

  /** The periodic health check of every live WebUI server, in parallel. */
  async checkAllWebUiHealth(): Promise<void> {
    const live = await this.db.getRepository(EndpointEntity).findBy({ provider: "webui", status: In(["Creating", "InService", "Failed"]) });
    await Promise.all(
      live.map((e) =>
        this.checkWebUiHealth(e.id).catch((err: unknown) => {
          this.log.warn({ err, endpoint: e.name }, "WebUI health check failed to run");
        }),
      ),
    );
  }

  /** Endpoints the caller may see: every one with sagemaker_endpoint:all; else those assigned to one of their roles or created by them. */
  async list(principal: Principal, filter: { id?: unknown; status?: unknown } = {}): Promise<EndpointView[]> {
    const id = filter.id === undefined ? undefined : parseInput(z.uuid({ error: "must be an endpoint deployment id (a UUID)" }), filter.id, "id");
    const status = filter.status === undefined ? undefined : parseInput(z.enum(["Creating", "InService", "Updating", "Deleting", "Deleted", "Failed"], { error: "must be an endpoint status" }), filter.status, "status");
    return this.views({ ...(id ? { ids: [id] } : {}), ...(status ? { status } : {}), visibleTo: principal });
  }

  async get(principal: Principal, name: unknown): Promise<EndpointView> {
    const endpointName = parseInput(endpointNameSchema, name, "name");
    const [found] = await this.views({ name: endpointName, visibleTo: principal });
    if (!found) throw DomainError.notFound(`endpoint "${endpointName}" not found`);
    return found;
  }

  private async views(filter: { ids?: string[]; name?: string; names?: string[]; status?: EndpointStatus; visibleTo?: Principal }): Promise<EndpointView[]> {
    const qb = this.db
      .getRepository(EndpointEntity)
      .createQueryBuilder("e")
      .leftJoin("users", "u", "u.id = e.creator_id")
      .addSelect("u.username", "creator_username")
      .orderBy("e.created_at", "DESC");
    if (filter.ids) qb.andWhere("e.id IN (:...ids)", { ids: filter.ids });
    if (filter.name) qb.andWhere("e.name = :name", { name: filter.name }).orderBy("e.status = 'Deleted'", "ASC").addOrderBy("e.created_at", "DESC");
    if (filter.names) qb.andWhere("e.name IN (:...names)", { names: filter.names });
    if (filter.status) qb.andWhere("e.status = :status", { status: filter.status });
    const p = filter.visibleTo;
    if (p && !p.permissions.allows("sagemaker_endpoint", "all")) qb.andWhere("(e.owner_roles && :roles OR e.creator_id = :me)", { roles: p.roles, me: p.userId });
    const { entities, raw } = await qb.getRawAndEntities();
    return entities.map((e, i) => {
      const { credentialsSealed, ...rest } = e;
      return Object.assign(rest, { creator: (raw[i] as { creator_username: string | null }).creator_username ?? null, hasCredentials: credentialsSealed !== null });
    });
  }

  /**
   * Starts deleting endpoints by name: all or none (unknown or forbidden names refuse the request).
   * Needs sagemaker_endpoint:all, or sagemaker_endpoint:create for endpoints one created.
   */
  async delete(principal: Principal, names: unknown, claimedUser?: unknown): Promise<EndpointView[]> {
    const list = [...new Set(parseInput(namesSchema, names, "names"))];
    const claimed = claimedUser === undefined ? undefined : parseInput(z.string({ error: "must be a string" }), claimedUser, "username");
    if (claimed !== undefined && claimed !== principal.username) {
      throw DomainError.forbidden(`username "${claimed}" must be the calling user "${principal.username}"`);
    }
    const all = principal.permissions.allows("sagemaker_endpoint", "all");
    if (!principal.permissions.allows("sagemaker_endpoint", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" has no permission to delete SageMaker endpoints`);
    }
    const visible = await this.views({ names: list, visibleTo: principal });
    const targets = list.map((name) => {
      const e = visible.find((x) => x.name === name && x.status !== "Deleted");
      if (!e) throw DomainError.notFound(`endpoint "${name}" not found`);
      if (!all && e.creatorId !== principal.userId) throw DomainError.forbidden(`endpoint "${name}" was created by another user; deleting it needs sagemaker_endpoint:all`);
      return e;
    });
    for (const e of targets) {
      if (e.status !== "Deleting") await this.transition(e.id, "Deleting", {}, { requestedBy: principal.username });
      for (const hook of this.deletingHooks) await hook(e.id, e.name);
      await this.queue.enqueue("endpoint.delete", { endpointId: e.id }, endpointJobIds.delete(e.id));
    }
    return this.views({ ids: targets.map((t) => t.id) });
  }

  async follow(principal: Principal, name: unknown, after: unknown): Promise<AsyncIterableIterator<StoredEvent>> {
    const endpoint = await this.get(principal, name);
    return this.events.followFrom(endpoint.id, after, "the endpoint's");
  }

  // ---------------------------------------------------------------- workflows (job bodies)

  private spec(e: EndpointEntity): EndpointSpec {
    const locations = asyncOutputLocations(this.settings.bucket, e.name);
    return {
      endpointName: e.name,
      modelName: e.modelName,
      configName: e.configName,
      endpointType: e.endpointType,
      instanceType: e.instanceType,
      initialInstanceCount: e.initialInstanceCount,
      image: e.imageUri,
      modelDataUrl: this.settings.modelDataUrl,
      executionRoleArn: this.settings.executionRoleArn ?? "",
      environment: { ENDPOINT_NAME: e.name, ENDPOINT_ID: e.id, INSTANCE_TYPE: e.instanceType, BUCKET_NAME: this.settings.bucket, CREATED_AT: e.createdAt.toISOString() },
      ...(e.endpointType === "Async"
        ? {
            async: {
              outputPath: locations.outputPath,
              failurePath: locations.failurePath,
              ...(this.settings.successTopicArn ? { successTopicArn: this.settings.successTopicArn } : {}),
              ...(this.settings.errorTopicArn ? { errorTopicArn: this.settings.errorTopicArn } : {}),
              maxConcurrentInvocationsPerInstance: this.settings.maxConcurrentInvocationsPerInstance,
            },
          }
        : {}),
      tags: { "diffgate:endpoint-id": e.id },
    };
  }

  private async load(id: string): Promise<EndpointEntity | null> {
    return this.db.getRepository(EndpointEntity).findOneBy({ id });
  }

  /** Changes status under the row lock if the transition is allowed; records the event. */
  private async transition(id: string, to: EndpointStatus, patch: Partial<EndpointEntity>, data: Record<string, unknown> = {}): Promise<boolean> {
    return this.events.transaction(async (tx, events) => {
      const e = await tx.getRepository(EndpointEntity).createQueryBuilder("e").setLock("pessimistic_write").where("e.id = :id", { id }).getOne();
      if (!e || !canTransition(e.status, to, e.provider)) return false;
      const previous = e.status;
      await tx.update(EndpointEntity, { id }, { ...patch, status: to });
      if (previous !== to) await events.append(id, { type: "status", data: { status: to, previous, ...data }, terminal: to === "Deleted" });
      if (patch.currentInstanceCount !== undefined && patch.currentInstanceCount !== e.currentInstanceCount) {
        await events.append(id, { type: "instances", data: { current: patch.currentInstanceCount, previous: e.currentInstanceCount } });
      }
      return true;
    });
  }

  private async stillCreating(id: string): Promise<boolean> {
    return (await this.load(id))?.status === "Creating";
  }

  /**
   * One pass of the deploy workflow. Every step looks before it creates, so a pass that a dead
   * worker left half done is simply run again. Returns when to look again, if it must.
   */
  async advanceDeploy(id: string): Promise<{ recheckInMs?: number }> {
    const e = await this.load(id);
    if (!e || e.status !== "Creating" || e.provider !== "sagemaker") return {};
    const spec = this.spec(e);
    try {
      for (const [step, ensure] of [
        ["model", () => this.provisioner.ensureModel(spec)],
        ["config", () => this.provisioner.ensureEndpointConfig(spec)],
        ["endpoint", () => this.provisioner.ensureEndpoint(spec)],
      ] as const) {
        const outcome = await ensure();
        if (outcome === "created") await this.events.append(id, { type: "step", data: { step, outcome } });
        if (!(await this.stillCreating(id))) return {};
      }
      const state = await this.provisioner.describeEndpoint(spec.endpointName);
      if (state?.status === "InService") {
        if (e.autoscaling) {
          await this.provisioner.registerAutoscaling({ endpointName: e.name, minCapacity: e.minInstanceNumber, maxCapacity: e.maxInstanceNumber });
          await this.events.append(id, { type: "step", data: { step: "autoscaling", outcome: "registered", min: e.minInstanceNumber, max: e.maxInstanceNumber } });
        }
        await this.transition(id, "InService", { currentInstanceCount: state.currentInstanceCount, inServiceAt: new Date() });
        return {};
      }
      if (state?.status === "Failed") {
        await this.fail(e, state.failureReason ?? "SageMaker reported the endpoint as Failed without a reason");
        return {};
      }
      if (Date.now() - e.createdAt.getTime() > this.settings.deployTimeoutMs) {
        await this.fail(e, `the endpoint did not reach InService within ${Math.round(this.settings.deployTimeoutMs / 60000)} minutes (last status ${state?.status ?? "unknown"})`);
        return {};
      }
      if (state && state.currentInstanceCount !== e.currentInstanceCount) await this.transition(id, "Creating", { currentInstanceCount: state.currentInstanceCount });
    } catch (err) {
      if (err instanceof SageMakerRequestError) {
        await this.fail(e, err.message);
        return {};
      }
      if (Date.now() - e.createdAt.getTime() > this.settings.deployTimeoutMs) {
        await this.fail(e, `gave up after repeated errors; the last: ${(err as Error).message}`);
        return {};
      }
      this.log.warn({ err, endpoint: e.name }, "deploy step failed; will look again");
    }
    await this.db.getRepository(EndpointEntity).increment({ id }, "statusChecks", 1);
    return { recheckInMs: recheckDelay(e.statusChecks) };
  }

  /** Records the failure first (so the reason survives), then removes what was half built. */
  private async fail(e: EndpointEntity, reason: string): Promise<void> {
    if (!(await this.transition(e.id, "Failed", { failureReason: reason.slice(0, 4000), currentInstanceCount: 0 }, { reason }))) return;
    try {
      await this.provisioner.deleteAll({ endpointName: e.name, configName: e.configName, modelName: e.modelName });
      await this.events.append(e.id, { type: "step", data: { step: "cleanup", outcome: "removed SageMaker resources of the failed deployment" } });
    } catch (err) {
      this.log.warn({ err, endpoint: e.name }, "cleaning up a failed deployment failed; delete the endpoint to retry");
      await this.events.append(e.id, { type: "step", data: { step: "cleanup", outcome: "failed", error: (err as Error).message } });
    }
  }

  /** One pass of the delete workflow: removes everything (repeatable), then waits until SageMaker forgets the endpoint. */
  async advanceDelete(id: string): Promise<{ recheckInMs?: number }> {
    const e = await this.load(id);
    if (!e || e.status !== "Deleting") return {};
    if (e.provider === "webui") {
      // Nothing was built for a registered server: forgetting it is the whole deletion.
      await this.transition(id, "Deleted", { currentInstanceCount: 0, deletedAt: new Date(), credentialsSealed: null });
      return {};
    }
    try {
      await this.provisioner.deleteAll({ endpointName: e.name, configName: e.configName, modelName: e.modelName });
      const state = await this.provisioner.describeEndpoint(e.name);
      if (!state) {
        await this.transition(id, "Deleted", { currentInstanceCount: 0, deletedAt: new Date() });
        return {};
      }
    } catch (err) {
      this.log.warn({ err, endpoint: e.name }, "delete step failed; will look again");
    }
    await this.db.getRepository(EndpointEntity).increment({ id }, "statusChecks", 1);
    return { recheckInMs: recheckDelay(Math.min(e.statusChecks, 8)) };
  }

  /**
   * Compares every live endpoint with SageMaker: drift (deleted or failed outside Diffgate, instance
   * counts changed by autoscaling) becomes events; workflows whose job went missing are queued again.
   */
  async reconcile(): Promise<void> {
    const live = await this.db.getRepository(EndpointEntity).findBy({ status: In(["Creating", "InService", "Updating", "Deleting", "Failed"]) });
    for (const e of live) {
      try {
        if (e.provider === "webui") {
          if (e.status === "Deleting") await this.queue.enqueue("endpoint.delete", { endpointId: e.id }, endpointJobIds.delete(e.id));
          continue; // its health check follows it
        }
        if (e.status === "Creating") {
          await this.queue.enqueue("endpoint.deploy", { endpointId: e.id }, endpointJobIds.deploy(e.id));
          continue;
        }
        if (e.status === "Deleting") {
          await this.queue.enqueue("endpoint.delete", { endpointId: e.id }, endpointJobIds.delete(e.id));
          continue;
        }
        if (e.status === "Failed") continue;
        const state = await this.provisioner.describeEndpoint(e.name);
        if (!state) {
          await this.transition(e.id, "Deleted", { currentInstanceCount: 0, deletedAt: new Date() }, { drift: "the endpoint no longer exists in SageMaker (deleted outside Diffgate)" });
        } else if (state.status === "Failed") {
          await this.transition(e.id, "Failed", { failureReason: state.failureReason ?? "failed outside Diffgate", currentInstanceCount: 0 }, { drift: "SageMaker reports the endpoint as Failed", reason: state.failureReason });
        } else if ((state.status === "InService" || state.status === "Updating") && (state.status !== e.status || state.currentInstanceCount !== e.currentInstanceCount)) {
          await this.transition(e.id, state.status, { currentInstanceCount: state.currentInstanceCount });
        }
      } catch (err) {
        this.log.warn({ err, endpoint: e.name }, "reconciling an endpoint failed");
      }
    }
  }
}
