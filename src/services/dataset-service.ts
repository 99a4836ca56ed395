import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { DataSource } from "typeorm";
import { z } from "zod";
import { DatasetEntity, DatasetItemEntity } from "../adapters/db/entities/dataset.entity.js";
import type { ObjectStore } from "../adapters/storage/object-store.js";
import { DATASET_NAME_MAX, DATASET_NAME_PATTERN, DATASET_STATUSES, canTransition, datasetFileNameProblem, datasetPrefix, type DatasetStatus } from "../domain/datasets.js";
import { DomainError } from "../domain/errors.js";
import { assertMayChange, visibleToCaller } from "../domain/ownership.js";
import type { StoredEvent } from "../domain/events.js";
import type { Principal } from "../domain/principal.js";
import { parseInput } from "../domain/validation.js";
import type { EventLog } from "./event-log.js";

export interface DatasetSettings {
  /** Most files one dataset may be created with (DATASET_MAX_FILES). */
  maxFiles: number;
  /** Lifetime of the presigned PUT URLs (upstream: 7 days). */
  uploadUrlTtlSeconds: number;
  /** Lifetime of the presigned preview URLs (upstream: 24 h). */
  previewUrlTtlSeconds: number;
}

export interface DatasetItemView {
  filename: string;
  name: string;
  type: string;
  params: Record<string, unknown>;
  key: string;
  /** A presigned GET URL; set by `detail`, not by listings. */
  previewUrl?: string;
}

export interface DatasetView {
  id: string;
  name: string;
  status: DatasetStatus;
  prefix: string;
  params: Record<string, unknown>;
  creator: string | null;
  creatorId: string | null;
  allowedRoles: string[];
  fileCount: number;
  createdAt: Date;
  updatedAt: Date;
  /** Set by `detail` and `create`. */
  items?: DatasetItemView[];
}

export interface DatasetUploadUrl {
  filename: string;
  key: string;
  url: string;
}

const datasetName = z
  .string({ error: "must be a dataset name" })
  .min(1, { error: "must not be empty" })
  .max(DATASET_NAME_MAX, { error: `must be at most ${DATASET_NAME_MAX} characters` })
  .regex(DATASET_NAME_PATTERN, { error: "must start with a letter and contain only letters, digits, _ and -" });

const fileName = z.string({ error: "must be a file name" }).superRefine((name, ctx) => {
  const problem = datasetFileNameProblem(name);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const jsonObject = z.record(z.string(), z.unknown(), { error: "must be an object" }).refine((o) => JSON.stringify(o).length <= 10_000, { error: "must be at most 10000 characters as JSON" });

const statusSchema = z.enum(DATASET_STATUSES, { error: `must be one of ${DATASET_STATUSES.join(", ")}` });

/** A JSON object for a jsonb column (TypeORM's insert typing cannot express `unknown` values). */
const jsonb = (o: Record<string, unknown>) => o as Record<string, never>;

/** Runs `work` over `items` with at most `limit` in flight. */
async function mapLimited<T, R>(items: T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await work(items[i]!);
      }
    }),
  );
  return out;
}

/**
 * Datasets: a named set of training files uploaded straight to the object store with presigned PUTs,
 * enabled once every file really is there, listed with preview URLs, deleted with every object.
 */
export class DatasetService {
  private readonly createSchema;

  constructor(
    private readonly db: DataSource,
    private readonly events: EventLog,
    private readonly store: ObjectStore,
    private readonly settings: DatasetSettings,
    private readonly log: Logger,
  ) {
    this.createSchema = z
      .object({
        name: datasetName,
        files: z
          .array(
            z
              .object({
                filename: fileName,
                name: z.string({ error: "must be a string" }).min(1, { error: "must not be empty" }).max(255, { error: "must be at most 255 characters" }).optional(),
                type: z.string({ error: "must be a string such as image" }).min(1, { error: "must not be empty" }).max(64, { error: "must be at most 64 characters" }),
                params: jsonObject.optional(),
              })
              .strict(),
            { error: "must be a list of files" },
          )
          .min(1, { error: "must name at least one file" })
          .max(settings.maxFiles, { error: `at most ${settings.maxFiles} files (DATASET_MAX_FILES)` }),
        params: jsonObject.optional(),
        creator: z.string().optional(),
      })
      .strict();
  }

  /** Creates the dataset `Initialed` with its items, and one presigned PUT per file. An existing name is a 409. */
  async create(principal: Principal, input: unknown): Promise<{ dataset: DatasetView; uploads: DatasetUploadUrl[] }> {
    const v = parseInput(this.createSchema, input);
    if (v.creator !== undefined && v.creator !== principal.username) {
      throw DomainError.forbidden(`creator "${v.creator}" must be the calling user "${principal.username}"; identities are taken from credentials, not from the body`);
    }
    if (!principal.permissions.allows("train", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" has no permission to create datasets (needs train:create or train:all)`);
    }
    const names = v.files.map((f) => f.filename);
    const duplicate = names.find((n, i) => names.indexOf(n) !== i);
    if (duplicate) throw DomainError.badInput(`files: ${duplicate} is listed twice`, "files");

    const id = randomUUID();
    const prefix = datasetPrefix(v.name);
    try {
      await this.events.transaction(async (tx, events) => {
        await tx.insert(DatasetEntity, { id, name: v.name, status: "Initialed", params: jsonb(v.params ?? {}), creatorId: principal.userId, allowedRoles: principal.roles });
        const rows = v.files.map((f, i) => ({ datasetId: id, filename: f.filename, name: f.name ?? f.filename, type: f.type, params: jsonb(f.params ?? {}), objectKey: `${prefix}${f.filename}`, position: i }));
        for (let i = 0; i < rows.length; i += 500) await tx.insert(DatasetItemEntity, rows.slice(i, i + 500));
        await events.openStream(id, "dataset", principal.userId);
        await events.append(id, { type: "status", data: { status: "Initialed", files: rows.length } });
      });
    } catch (e) {
      if ((e as { code?: string }).code === "23505") throw DomainError.conflict(`dataset ${v.name} already exists; choose another name, or delete the existing dataset first`, "name");
      throw e;
    }
    const uploads = await Promise.all(v.files.map(async (f) => ({ filename: f.filename, key: `${prefix}${f.filename}`, url: await this.store.presignPut(`${prefix}${f.filename}`, this.settings.uploadUrlTtlSeconds) })));
    return { dataset: await this.detail(principal, v.name, { preview: false }), uploads };
  }

  /**
   * Enabled (only once every file exists in the store; a 409 names the missing ones) or Disabled
   * (only after it was Enabled). Setting the current status again is harmless.
   */
  async setStatus(principal: Principal, name: unknown, status: unknown): Promise<DatasetView> {
    const n = parseInput(datasetName, name, "name");
    const to = parseInput(z.enum(["Enabled", "Disabled"], { error: "must be Enabled or Disabled" }), status, "status");
    const dataset = await this.writable(principal, n);
    if (!canTransition(dataset.status, to)) throw DomainError.conflict(`dataset ${n} is ${dataset.status} and cannot become ${to}; enable it first`, "status");
    if (to === "Enabled") {
      const items = await this.db.getRepository(DatasetItemEntity).find({ where: { datasetId: dataset.id }, order: { position: "ASC" } });
      const heads = await mapLimited(items, 16, (i) => this.store.head(i.objectKey));
      const missing = items.filter((_, i) => heads[i] === undefined).map((i) => i.filename);
      if (missing.length) {
        const shown = missing.slice(0, 20).join(", ");
        throw DomainError.conflict(`dataset ${n} cannot be Enabled: ${missing.length} file(s) not uploaded yet: ${shown}${missing.length > 20 ? ", …" : ""}`, "status");
      }
    }
    await this.events.transaction(async (tx, events) => {
      const d = await tx.getRepository(DatasetEntity).createQueryBuilder("d").setLock("pessimistic_write").where("d.id = :id", { id: dataset.id }).getOne();
      if (!d || d.status === to) return;
      if (!canTransition(d.status, to)) throw DomainError.conflict(`dataset ${n} is ${d.status} and cannot become ${to}`, "status");
      await tx.update(DatasetEntity, { id: d.id }, { status: to });
      await events.append(d.id, { type: "status", data: { status: to, previous: d.status } });
    });
    return this.detail(principal, n, { preview: false });
  }

  /** Deletes datasets (all or none): every object under `dataset/<name>/`, then the rows. */
  async delete(principal: Principal, names: unknown): Promise<string[]> {
    const list = [...new Set(parseInput(z.array(datasetName, { error: "must be a list of dataset names" }).min(1, { error: "must name at least one dataset" }).max(10, { error: "at most 10 at once" }), names, "names"))];
    const datasets = await Promise.all(list.map((n) => this.writable(principal, n)));
    for (const d of datasets) {
      const objects = await this.store.deletePrefix(datasetPrefix(d.name));
      this.log.info({ dataset: d.name, objects }, "dataset deleted");
      await this.events.transaction(async (tx, events) => {
        await tx.delete(DatasetEntity, { id: d.id });
        await events.append(d.id, { type: "status", data: { status: "Deleted", previous: d.status }, terminal: true });
      });
    }
    return list;
  }

  // ---------------------------------------------------------------- reads

  /** A dataset the caller may change (its creator, or train:all); others' are 404 or 403. */
  private async writable(principal: Principal, name: string): Promise<DatasetEntity> {
    const dataset = await this.db.getRepository(DatasetEntity).findOneBy({ name });
    assertMayChange(principal, "train", dataset, `dataset ${name} is not found`, `dataset ${name}`);
    return dataset;
  }

  /** One dataset with its items (and, by default, a presigned preview URL per item). */
  async detail(principal: Principal, name: unknown, options: { preview?: boolean } = {}): Promise<DatasetView> {
    const n = parseInput(datasetName, name, "name");
    const [found] = await this.query(principal, { names: [n] });
    if (!found) throw DomainError.notFound(`dataset ${n} is not found`);
    const items = await this.db.getRepository(DatasetItemEntity).find({ where: { datasetId: found.id }, order: { position: "ASC" } });
    found.items = await Promise.all(
      items.map(async (i) => ({
        filename: i.filename,
        name: i.name,
        type: i.type,
        params: i.params,
        key: i.objectKey,
        ...(options.preview === false ? {} : { previewUrl: await this.store.presignGet(i.objectKey, this.settings.previewUrlTtlSeconds) }),
      })),
    );
    return found;
  }

  /** The datasets the caller may see, newest first, optionally of one status. */
  async list(principal: Principal, input: { status?: unknown } = {}): Promise<DatasetView[]> {
    const status = input.status === undefined ? undefined : parseInput(statusSchema, input.status, "status");
    return this.query(principal, status ? { statuses: [status] } : {});
  }

  private async query(principal: Principal, filter: { names?: string[]; statuses?: DatasetStatus[] }): Promise<DatasetView[]> {
    const vis = visibleToCaller(principal, "train", "d");
    const qb = this.db
      .getRepository(DatasetEntity)
      .createQueryBuilder("d")
      .leftJoin("users", "u", "u.id = d.creator_id")
      .addSelect("u.username", "creator_username")
      .addSelect("(SELECT count(*)::int FROM dataset_items i WHERE i.dataset_id = d.id)", "file_count")
      .where(vis.sql, vis.params)
      .orderBy("d.created_at", "DESC")
      .addOrderBy("d.id", "DESC");
    if (filter.names) qb.andWhere("d.name IN (:...names)", { names: filter.names });
    if (filter.statuses?.length) qb.andWhere("d.status IN (:...statuses)", { statuses: filter.statuses });
    const { entities, raw } = await qb.getRawAndEntities();
    return entities.map((d, i) => {
      const r = raw[i] as { creator_username: string | null; file_count: number };
      return {
        id: d.id,
        name: d.name,
        status: d.status,
        prefix: datasetPrefix(d.name),
        params: d.params,
        creator: r.creator_username ?? null,
        creatorId: d.creatorId,
        allowedRoles: d.allowedRoles,
        fileCount: Number(r.file_count),
        createdAt: d.createdAt,
        updatedAt: d.updatedAt,
      };
    });
  }

  /** Status changes of a dataset after `after`, then live ones. */
  async follow(principal: Principal, name: unknown, after: unknown): Promise<AsyncIterableIterator<StoredEvent>> {
    const [dataset] = await this.query(principal, { names: [parseInput(datasetName, name, "name")] });
    if (!dataset) throw DomainError.notFound(`dataset ${String(name)} is not found`);
    return this.events.followFrom(dataset.id, after, "the dataset's");
  }
}
