import { createHash, randomUUID } from "node:crypto";
import type { Logger } from "pino";
import { In, type DataSource, type EntityManager } from "typeorm";
import { z } from "zod";
import type { JobQueue } from "../../queues/job-queue.js";
import { CheckpointEntity, CheckpointFileEntity } from "../adapters/db/entities/checkpoint.entity.js";
import { DownloadRefused, checkFileName, openGuardedDownload, type DownloadPolicy } from "../adapters/http/guarded-download.js";
import type { ObjectStore } from "../adapters/storage/object-store.js";
import {
  CHECKPOINT_STATUSES,
  CHECKPOINT_TYPES,
  MAX_PART_BYTES,
  MAX_PARTS,
  MIN_PART_BYTES,
  canTransition,
  checkpointPrefix,
  extensionOf,
  fileNameProblem,
  type CheckpointSource,
  type CheckpointStatus,
  type CheckpointType,
} from "../domain/checkpoints.js";
import { DomainError } from "../domain/errors.js";
import { decodeKeysetCursor, encodeKeysetCursor, type KeysetCursor } from "../domain/keyset-cursor.js";
import { assertMayChange, visibleToCaller } from "../domain/ownership.js";
import type { StoredEvent } from "../domain/events.js";
import type { Principal } from "../domain/principal.js";
import { parseInput } from "../domain/validation.js";
import type { EventLog } from "./event-log.js";

export interface CheckpointSettings {
  /** Lifetime of presigned part URLs (S3 allows at most 7 days). */
  uploadUrlTtlSeconds: number;
  downloadUrlTtlSeconds: number;
  /** Unfinished uploads older than this are aborted by the housekeeping job. */
  unfinishedUploadMaxAgeMs: number;
  download: DownloadPolicy;
  importPartSizeBytes: number;
  importConcurrency: number;
}

export interface CheckpointFileView {
  name: string;
  key: string;
  uploadId: string | null;
  partsNumber: number;
  sizeBytes: number | null;
  sourceUrl: string | null;
}

export interface CheckpointView {
  id: string;
  type: CheckpointType;
  status: CheckpointStatus;
  prefix: string;
  source: CheckpointSource;
  message: string | null;
  creator: string | null;
  creatorId: string | null;
  allowedRoles: string[];
  failureReason: string | null;
  files: CheckpointFileView[];
  createdAt: Date;
  updatedAt: Date;
}

export interface UploadTicket {
  fileName: string;
  key: string;
  uploadId: string;
  partUrls: string[];
}

const fileName = z.string({ error: "must be a file name" }).superRefine((name, ctx) => {
  const problem = fileNameProblem(name);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});
const checkpointType = z.enum(CHECKPOINT_TYPES, { error: `must be one of ${CHECKPOINT_TYPES.join(", ")}` });

const createUploadSchema = z
  .object({
    type: checkpointType,
    files: z
      .array(
        z
          .object({
            name: fileName,
            partsNumber: z.number({ error: "must be a whole number" }).int({ error: "must be a whole number" }).min(1, { error: "must be at least 1" }).max(MAX_PARTS, { error: `must be at most ${MAX_PARTS}` }),
            sizeBytes: z.number({ error: "must be a number of bytes" }).int().min(1).optional(),
          })
          .strict(),
        { error: "must be a list of files" },
      )
      .min(1, { error: "must name at least one file" })
      .max(20, { error: "at most 20 files" }),
    message: z.string({ error: "must be a string" }).max(2000).optional(),
    creator: z.string().optional(),
  })
  .strict();

const importSchema = z
  .object({
    type: checkpointType,
    urls: z.array(z.string({ error: "must be a URL" }).max(4096), { error: "must be a list of URLs" }).min(1, { error: "must name at least one URL" }).max(20, { error: "at most 20 URLs" }),
    message: z.string({ error: "must be a string" }).max(2000).optional(),
    creator: z.string().optional(),
  })
  .strict();

const partTag = z.union([
  z.string({ error: "must be an ETag" }).min(1),
  z.object({ ETag: z.string({ error: "must be an ETag" }).min(1), PartNumber: z.number().int().min(1).max(MAX_PARTS) }).loose(),
]);
const completeSchema = z.record(z.string(), z.array(partTag, { error: "must be the list of the file's part ETags" }), { error: "must map each file name to its part ETags" });

const idSchema = z.uuid({ error: "must be a checkpoint id (a UUID)" });

const listSchema = z
  .object({
    statuses: z.array(z.enum(CHECKPOINT_STATUSES, { error: `must be one of ${CHECKPOINT_STATUSES.join(", ")}` })).optional(),
    types: z.array(checkpointType).optional(),
    first: z.number().int().min(1, { error: "must be at least 1" }).max(500, { error: "must be at most 500" }).default(50),
    after: z.string().max(200).optional(),
  })
  .strict();

function urlFileName(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw DomainError.badInput(`urls: ${JSON.stringify(raw.slice(0, 100))} is not a URL`, "urls");
  }
  const segment = url.pathname.split("/").filter(Boolean).at(-1) ?? "";
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * Checkpoints: multipart uploads straight to the object store, imports from URLs (a queued job
 * that streams into the store), rename, delete, listing, and their event streams.
 */
export class CheckpointService {
  constructor(
    private readonly db: DataSource,
    private readonly events: EventLog,
    private readonly queue: JobQueue,
    private readonly store: ObjectStore,
    private readonly settings: CheckpointSettings,
    private readonly log: Logger,
  ) {}

  private requireCreate(principal: Principal, creator: string | undefined) {
    if (creator !== undefined && creator !== principal.username) {
      throw DomainError.forbidden(`creator "${creator}" must be the calling user "${principal.username}"; identities are taken from credentials, not from the body`);
    }
    if (!principal.permissions.allows("checkpoint", "create")) {
      throw DomainError.forbidden(`user "${principal.username}" has no permission to create checkpoints (needs checkpoint:create or checkpoint:all)`);
    }
  }

  /** Inserts the checkpoint and its files in one transaction; a taken name is a 409 from the constraint. */
  private async insert(principal: Principal, type: CheckpointType, source: "upload" | "url", message: string | undefined, files: Array<{ name: string; partsNumber: number; sourceUrl?: string }>): Promise<string> {
    const id = randomUUID();
    const prefix = checkpointPrefix(type, id);
    try {
      await this.events.transaction(async (tx, events) => {
        await tx.insert(CheckpointEntity, { id, type, status: "Initial", prefix, source, message: message ?? null, creatorId: principal.userId, allowedRoles: principal.roles, failureReason: null });
        await tx.insert(
          CheckpointFileEntity,
          files.map((f, i) => ({ checkpointId: id, checkpointType: type, name: f.name, objectKey: `${prefix}${f.name}`, partsNumber: f.partsNumber, sourceUrl: f.sourceUrl ?? null, uploadId: null, sizeBytes: null, position: i })),
        );
        await events.openStream(id, "checkpoint", principal.userId);
        await events.append(id, { type: "status", data: { status: "Initial", source } });
      });
    } catch (e) {
      if ((e as { code?: string }).code === "23505") {
        const taken = await this.db.getRepository(CheckpointFileEntity).findBy({ checkpointType: type, name: In(files.map((f) => f.name)) });
        throw DomainError.conflict(`${taken.map((t) => t.name).join(", ") || "a file name"} already exists for type ${type}; use another name, or rename or delete the existing checkpoint`, "files");
      }
      throw e;
    }
    return id;
  }

  /** One multipart upload per file and one presigned URL per part; the checkpoint stays Initial until completed. */
  async createUpload(principal: Principal, input: unknown): Promise<{ checkpoint: CheckpointView; uploads: UploadTicket[] }> {
    const v = parseInput(createUploadSchema, input);
    this.requireCreate(principal, v.creator);
    const names = v.files.map((f) => f.name);
    const duplicate = names.find((n, i) => names.indexOf(n) !== i);
    if (duplicate) throw DomainError.badInput(`files: ${duplicate} is listed twice`, "files");
    v.files.forEach((f, i) => {
      if (f.sizeBytes === undefined) return;
      // Every part but the last must be at least 5 MiB, and none above 5 GiB.
      if (f.partsNumber > 1 && (f.partsNumber - 1) * MIN_PART_BYTES >= f.sizeBytes) {
        throw DomainError.badInput(`files.${i}.partsNumber: ${f.partsNumber} parts of a ${f.sizeBytes}-byte file would be smaller than S3's 5 MiB minimum part; use at most ${Math.max(1, Math.ceil(f.sizeBytes / MIN_PART_BYTES))}`, `files.${i}.partsNumber`);
      }
      if (f.partsNumber * MAX_PART_BYTES < f.sizeBytes) throw DomainError.badInput(`files.${i}.partsNumber: parts would exceed S3's 5 GiB maximum; use at least ${Math.ceil(f.sizeBytes / MAX_PART_BYTES)}`, `files.${i}.partsNumber`);
    });

    const id = await this.insert(principal, v.type, "upload", v.message, v.files);
    const uploads: UploadTicket[] = [];
    try {
      for (const f of await this.files(id)) {
        const uploadId = await this.store.createMultipartUpload(f.objectKey, "application/octet-stream");
        await this.db.getRepository(CheckpointFileEntity).update({ id: f.id }, { uploadId });
        const partUrls = await Promise.all(Array.from({ length: f.partsNumber }, (_, i) => this.store.presignUploadPart(f.objectKey, uploadId, i + 1, this.settings.uploadUrlTtlSeconds)));
        uploads.push({ fileName: f.name, key: f.objectKey, uploadId, partUrls });
      }
    } catch (e) {
      // No half-written record: undo the uploads and the row.
      for (const u of uploads) await this.store.abortMultipartUpload(u.key, u.uploadId).catch(() => undefined);
      await this.db.getRepository(CheckpointEntity).delete({ id });
      this.log.error({ err: e }, "creating multipart uploads failed");
      throw DomainError.unavailable("the object store refused to start the upload; try again");
    }
    return { checkpoint: await this.view(principal, id), uploads };
  }

  /**
   * Completes every file's multipart upload with the client's ETags (checked against what the store
   * received) and activates the checkpoint. Completing again is harmless.
   */
  async completeUpload(principal: Principal, id: unknown, tags: unknown): Promise<CheckpointView> {
    const checkpointId = parseInput(idSchema, id, "id");
    const byFile = parseInput(completeSchema, tags, "parts");
    const checkpoint = await this.writable(principal, checkpointId);
    if (checkpoint.status === "Active") return this.view(principal, checkpointId);
    if (checkpoint.status !== "Initial" || checkpoint.source !== "upload") throw DomainError.conflict(`checkpoint ${checkpointId} is ${checkpoint.status}; only an Initial upload can be completed`);
    const files = await this.files(checkpointId);
    const unknown = Object.keys(byFile).filter((n) => !files.some((f) => f.name === n));
    if (unknown.length) throw DomainError.badInput(`parts: ${unknown.join(", ")} is not a file of this checkpoint`, "parts");

    for (const f of files) {
      if (f.uploadId === null) continue; // completed by an earlier call
      const given = byFile[f.name];
      if (!given) throw DomainError.badInput(`parts.${f.name}: missing; give the ETags of all ${f.partsNumber} parts`, `parts.${f.name}`);
      const parts = given.map((t, i) => (typeof t === "string" ? { partNumber: i + 1, etag: t } : { partNumber: t.PartNumber, etag: t.ETag })).sort((a, b) => a.partNumber - b.partNumber);
      const expected = Array.from({ length: f.partsNumber }, (_, i) => i + 1);
      const missing = expected.filter((n) => !parts.some((p) => p.partNumber === n));
      if (missing.length || parts.length !== f.partsNumber) {
        throw DomainError.badInput(`parts.${f.name}: expected parts 1..${f.partsNumber}${missing.length ? `; missing ${missing.join(", ")}` : `; got ${parts.length}`}`, `parts.${f.name}`);
      }
      const stored = await this.store.listParts(f.objectKey, f.uploadId);
      const clean = (etag: string) => etag.replace(/^"|"$/g, "");
      for (const p of parts) {
        const s = stored.find((x) => x.partNumber === p.partNumber);
        if (!s) throw DomainError.badInput(`parts.${f.name}: part ${p.partNumber} was never uploaded`, `parts.${f.name}`);
        if (clean(s.etag) !== clean(p.etag)) throw DomainError.badInput(`parts.${f.name}: part ${p.partNumber}'s ETag does not match what the store received`, `parts.${f.name}`);
      }
      for (const s of stored.slice(0, -1)) {
        if (s.size < MIN_PART_BYTES) throw DomainError.badInput(`parts.${f.name}: part ${s.partNumber} is ${s.size} bytes; every part but the last must be at least 5 MiB`, `parts.${f.name}`);
      }
      await this.store.completeMultipartUpload(f.objectKey, f.uploadId, parts);
      const head = await this.store.head(f.objectKey);
      await this.db.getRepository(CheckpointFileEntity).update({ id: f.id }, { uploadId: null, sizeBytes: head ? String(head.size) : null });
    }
    await this.transition(checkpointId, "Active", {});
    return this.view(principal, checkpointId);
  }

  /** Queues an import: the worker streams each URL into the store. */
  async importFromUrls(principal: Principal, input: unknown): Promise<CheckpointView> {
    const v = parseInput(importSchema, input);
    this.requireCreate(principal, v.creator);
    const files = v.urls.map((url, i) => {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw DomainError.badInput(`urls.${i}: not a URL`, `urls.${i}`);
      }
      if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw DomainError.badInput(`urls.${i}: only http and https URLs can be imported`, `urls.${i}`);
      const name = urlFileName(url);
      try {
        checkFileName(name, this.settings.download);
      } catch (e) {
        throw DomainError.badInput(`urls.${i}: ${(e as Error).message}`, `urls.${i}`);
      }
      return { name, partsNumber: 0, sourceUrl: url };
    });
    const duplicate = files.find((f, i) => files.findIndex((g) => g.name === f.name) !== i);
    if (duplicate) throw DomainError.badInput(`urls: two URLs would both be stored as ${duplicate.name}`, "urls");
    const id = await this.insert(principal, v.type, "url", v.message, files);
    await this.queue.enqueue("checkpoint.import", { checkpointId: id }, `checkpoint-import-${id}`);
    return this.view(principal, id);
  }

  /** The import job. A crash restarts the files not yet stored; any failure ends Failed with the reason. */
  async runImport(checkpointId: string, signal?: AbortSignal): Promise<void> {
    const checkpoint = await this.db.getRepository(CheckpointEntity).findOneBy({ id: checkpointId });
    if (!checkpoint || checkpoint.status !== "Initial" || checkpoint.source !== "url") return;
    const files = await this.files(checkpointId);
    try {
      for (const f of files) {
        if (f.sizeBytes !== null) continue;
        const download = await openGuardedDownload(f.sourceUrl!, this.settings.download, signal ? { signal } : {});
        const total = download.contentLength;
        await this.events.append(checkpointId, { type: "progress", data: { file: f.name, bytesDone: 0, bytesTotal: total ?? null } });
        let lastReport = 0;
        let lastAt = Date.now();
        const { size } = await this.store.uploadStream(f.objectKey, download.stream, {
          contentType: "application/octet-stream",
          partSizeBytes: this.settings.importPartSizeBytes,
          concurrency: this.settings.importConcurrency,
          ...(signal ? { signal } : {}),
          onProgress: (done) => {
            // Throttled: at most one event a second (and the final one below).
            if (Date.now() - lastAt < 1000 || done === lastReport) return;
            lastReport = done;
            lastAt = Date.now();
            void this.events.append(checkpointId, { type: "progress", data: { file: f.name, bytesDone: done, bytesTotal: total ?? null } }).catch(() => undefined);
          },
        });
        const head = await this.store.head(f.objectKey);
        if (!head || head.size !== size || (total !== undefined && head.size !== total)) {
          throw new Error(`the stored object of ${f.name} has ${head?.size ?? 0} bytes, expected ${total ?? size}`);
        }
        await this.db.getRepository(CheckpointFileEntity).update({ id: f.id }, { sizeBytes: String(head.size) });
        await this.events.append(checkpointId, { type: "progress", data: { file: f.name, bytesDone: head.size, bytesTotal: head.size, done: true } });
      }
      await this.transition(checkpointId, "Active", {});
    } catch (e) {
      const reason = e instanceof DownloadRefused ? `refused: ${e.message}` : `import failed: ${(e as Error).message}`;
      this.log.warn({ err: e, checkpointId }, "checkpoint import failed");
      await this.store.deletePrefix(checkpoint.prefix).catch(() => undefined);
      await this.transition(checkpointId, "Failed", { failureReason: reason.slice(0, 2000) }, { reason });
    }
  }

  /** Renames a single-file Active checkpoint; the extension is kept. The bytes move in a job. */
  async rename(principal: Principal, id: unknown, newName: unknown): Promise<{ checkpoint: CheckpointView; changed: boolean }> {
    const checkpointId = parseInput(idSchema, id, "id");
    let name = parseInput(z.string({ error: "must be a file name" }).min(1).max(255), newName, "name");
    const checkpoint = await this.writable(principal, checkpointId);
    if (checkpoint.status !== "Active") throw DomainError.conflict(`only an Active checkpoint can be renamed; this one is ${checkpoint.status}`, "name");
    const files = await this.files(checkpointId);
    if (files.length !== 1) throw DomainError.badInput("name: only single-file checkpoints can be renamed", "name");
    const file = files[0]!;
    const ext = extensionOf(file.name);
    if (!name.toLowerCase().endsWith(ext)) {
      if (extensionOf(name)) throw DomainError.badInput(`name: the file is a ${ext} file; keep its extension`, "name");
      name = `${name}${ext}`;
    }
    const problem = fileNameProblem(name);
    if (problem) throw DomainError.badInput(`name: ${problem}`, "name");
    if (name === file.name) return { checkpoint: await this.view(principal, checkpointId), changed: false };
    try {
      await this.events.transaction(async (tx, events) => {
        await tx.update(CheckpointFileEntity, { id: file.id }, { name });
        await events.append(checkpointId, { type: "rename", data: { from: file.name, to: name, state: "queued" } });
      });
    } catch (e) {
      if ((e as { code?: string }).code === "23505") throw DomainError.conflict(`${name} already exists for type ${checkpoint.type}`, "name");
      throw e;
    }
    // One job per (file, target name): renaming back and forth queues a new job each time.
    await this.queue.enqueue("checkpoint.rename", { checkpointId, fileId: file.id }, `checkpoint-rename-${file.id}-${createHash("sha256").update(name).digest("hex").slice(0, 16)}`);
    return { checkpoint: await this.view(principal, checkpointId), changed: true };
  }

  /** The rename job: copies the object to its new key (multipart copy above 5 GiB), then deletes the old one. */
  async runRename(fileId: string): Promise<void> {
    const file = await this.db.getRepository(CheckpointFileEntity).findOneBy({ id: fileId });
    if (!file) return;
    const checkpoint = await this.db.getRepository(CheckpointEntity).findOneByOrFail({ id: file.checkpointId });
    const target = `${checkpoint.prefix}${file.name}`;
    if (file.objectKey === target) return;
    const source = await this.store.head(file.objectKey);
    if (source) await this.store.copy(file.objectKey, target, source.size);
    else if (!(await this.store.head(target))) throw new Error(`neither ${file.objectKey} nor ${target} exists`);
    await this.events.transaction(async (tx, events) => {
      await tx.update(CheckpointFileEntity, { id: fileId }, { objectKey: target });
      await events.append(file.checkpointId, { type: "rename", data: { to: file.name, state: "done" } });
    });
    if (source) await this.store.deleteObject(file.objectKey);
  }

  /** Deletes checkpoints (all or none): every object under each prefix, unfinished uploads, the rows. */
  async delete(principal: Principal, ids: unknown): Promise<string[]> {
    const list = [...new Set(parseInput(z.array(idSchema, { error: "must be a list of checkpoint ids" }).min(1, { error: "must name at least one checkpoint" }).max(100, { error: "at most 100 at once" }), ids, "ids"))];
    const checkpoints = await Promise.all(list.map((id) => this.writable(principal, id)));
    for (const c of checkpoints) {
      for (const f of await this.files(c.id)) if (f.uploadId) await this.store.abortMultipartUpload(f.objectKey, f.uploadId);
      await this.store.deletePrefix(c.prefix);
      await this.db.getRepository(CheckpointEntity).delete({ id: c.id });
    }
    return list;
  }

  /**
   * Upstream's PUT with a status: completes an Initial upload with the parts' ETags, or switches a
   * completed checkpoint between Active and Disabled.
   */
  async updateStatus(principal: Principal, id: unknown, status: unknown, tags: unknown): Promise<CheckpointView> {
    const checkpoint = await this.view(principal, id);
    if (checkpoint.status !== "Initial" || checkpoint.source !== "upload") return this.setStatus(principal, id, status);
    if (status !== "Active") throw DomainError.badInput("status: an Initial upload can only become Active", "status");
    if (tags === undefined || tags === null || (typeof tags === "object" && Object.keys(tags).length === 0)) throw DomainError.badInput("multi parts tags is empty", "parts");
    return this.completeUpload(principal, id, tags);
  }

  /** Sets Active or Disabled on a completed checkpoint. */
  async setStatus(principal: Principal, id: unknown, status: unknown): Promise<CheckpointView> {
    const checkpointId = parseInput(idSchema, id, "id");
    const to = parseInput(z.enum(["Active", "Disabled"], { error: "must be Active or Disabled" }), status, "status");
    const checkpoint = await this.writable(principal, checkpointId);
    if (!canTransition(checkpoint.status, to)) throw DomainError.conflict(`checkpoint ${checkpointId} is ${checkpoint.status} and cannot become ${to}`, "status");
    await this.transition(checkpointId, to, {});
    return this.view(principal, checkpointId);
  }

  // ---------------------------------------------------------------- reads

  /** A checkpoint the caller may change (its creator, or checkpoint:all); others' are 404 or 403. */
  private async writable(principal: Principal, id: string): Promise<CheckpointEntity> {
    const checkpoint = await this.db.getRepository(CheckpointEntity).findOneBy({ id });
    assertMayChange(principal, "checkpoint", checkpoint, `checkpoint not found with id ${id}`, `checkpoint ${id}`);
    return checkpoint;
  }

  private files(checkpointId: string, tx?: EntityManager): Promise<CheckpointFileEntity[]> {
    return (tx ?? this.db.manager).getRepository(CheckpointFileEntity).find({ where: { checkpointId }, order: { position: "ASC" } });
  }

  async view(principal: Principal, id: unknown): Promise<CheckpointView> {
    const checkpointId = parseInput(idSchema, id, "id");
    const [found] = await this.query(principal, { ids: [checkpointId], limit: 1 });
    if (!found) throw DomainError.notFound(`checkpoint not found with id ${checkpointId}`);
    return found;
  }

  /** Keyset pagination, newest first: no OFFSET and no count. */
  async list(principal: Principal, input: unknown): Promise<{ items: CheckpointView[]; endCursor: string | null; hasNextPage: boolean }> {
    const v = parseInput(listSchema, input);
    const after = v.after ? decodeKeysetCursor(v.after) : undefined;
    const rows = await this.query(principal, { ...(v.statuses ? { statuses: v.statuses } : {}), ...(v.types ? { types: v.types } : {}), ...(after ? { after } : {}), limit: v.first + 1 });
    const items = rows.slice(0, v.first);
    return { items, hasNextPage: rows.length > v.first, endCursor: items.length ? encodeKeysetCursor(items.at(-1)!) : null };
  }

  /** Upstream's page/per_page listing (with a total), for REST clients. */
  async listPage(principal: Principal, input: { statuses?: unknown; types?: unknown; page: unknown; perPage: unknown }): Promise<{ items: CheckpointView[]; total: number; page: number; perPage: number }> {
    const page = parseInput(z.coerce.number({ error: "must be a whole number" }).int().min(1, { error: "must be at least 1" }).max(100_000), input.page, "page");
    const perPage = parseInput(z.coerce.number({ error: "must be a whole number" }).int().min(1, { error: "must be at least 1" }).max(500, { error: "must be at most 500" }), input.perPage, "per_page");
    const filter = parseInput(listSchema.pick({ statuses: true, types: true }), { ...(input.statuses !== undefined ? { statuses: input.statuses } : {}), ...(input.types !== undefined ? { types: input.types } : {}) });
    const items = await this.query(principal, { ...filter, limit: perPage, offset: (page - 1) * perPage });
    const total = await this.count(principal, filter);
    return { items, total, page, perPage };
  }

  /** Names of the caller's visible Active checkpoints of one type (the seed's get-*-list routes). */
  async activeNames(principal: Principal, type: CheckpointType): Promise<string[]> {
    const vis = visibleToCaller(principal, "checkpoint", "c");
    const rows: Array<{ name: string }> = await this.db
      .getRepository(CheckpointFileEntity)
      .createQueryBuilder("f")
      .innerJoin(CheckpointEntity, "c", "c.id = f.checkpoint_id")
      .select("f.name", "name")
      .where("c.checkpoint_type = :type AND c.status = 'Active'", { type })
      .andWhere(vis.sql, vis.params)
      .orderBy("f.name")
      .getRawMany();
    return rows.map((r) => r.name);
  }

  private async count(principal: Principal, filter: { statuses?: CheckpointStatus[]; types?: CheckpointType[] }): Promise<number> {
    const vis = visibleToCaller(principal, "checkpoint", "c");
    const qb = this.db.getRepository(CheckpointEntity).createQueryBuilder("c").where(vis.sql, vis.params);
    if (filter.statuses?.length) qb.andWhere("c.status IN (:...statuses)", { statuses: filter.statuses });
    if (filter.types?.length) qb.andWhere("c.checkpoint_type IN (:...types)", { types: filter.types });
    return qb.getCount();
  }

  private async query(principal: Principal, filter: { ids?: string[]; statuses?: CheckpointStatus[]; types?: CheckpointType[]; after?: KeysetCursor; limit: number; offset?: number }): Promise<CheckpointView[]> {
    const vis = visibleToCaller(principal, "checkpoint", "c");
    const qb = this.db
      .getRepository(CheckpointEntity)
      .createQueryBuilder("c")
      .leftJoin("users", "u", "u.id = c.creator_id")
      .addSelect("u.username", "creator_username")
      .where(vis.sql, vis.params)
      .orderBy("c.created_at", "DESC")
      .addOrderBy("c.id", "DESC")
      .limit(filter.limit);
    if (filter.offset) qb.offset(filter.offset);
    if (filter.ids) qb.andWhere("c.id IN (:...ids)", { ids: filter.ids });
    if (filter.statuses?.length) qb.andWhere("c.status IN (:...statuses)", { statuses: filter.statuses });
    if (filter.types?.length) qb.andWhere("c.checkpoint_type IN (:...types)", { types: filter.types });
    if (filter.after) qb.andWhere("(c.created_at, c.id) < (:afterAt, :afterId)", { afterAt: filter.after.createdAt, afterId: filter.after.id });
    const { entities, raw } = await qb.getRawAndEntities();
    const files = entities.length ? await this.db.getRepository(CheckpointFileEntity).find({ where: { checkpointId: In(entities.map((e) => e.id)) }, order: { position: "ASC" } }) : [];
    return entities.map((c, i) => ({
      id: c.id,
      type: c.type,
      status: c.status,
      prefix: c.prefix,
      source: c.source,
      message: c.message,
      creator: (raw[i] as { creator_username: string | null }).creator_username ?? null,
      creatorId: c.creatorId,
      allowedRoles: c.allowedRoles,
      failureReason: c.failureReason,
      files: files
        .filter((f) => f.checkpointId === c.id)
        .map((f) => ({ name: f.name, key: f.objectKey, uploadId: f.uploadId, partsNumber: f.partsNumber, sizeBytes: f.sizeBytes === null ? null : Number(f.sizeBytes), sourceUrl: f.sourceUrl })),
      createdAt: c.createdAt,
      updatedAt: c.updatedAt,
    }));
  }

  async follow(principal: Principal, id: unknown, after: unknown): Promise<AsyncIterableIterator<StoredEvent>> {
    const checkpoint = await this.view(principal, id);
    return this.events.followFrom(checkpoint.id, after, "the checkpoint's");
  }

  /** A presigned PUT for a key confined to the caller's uploads prefix (the seed's generate-s3-presigned-url-for-uploading). */
  async presignedUploadUrl(principal: Principal, key: unknown): Promise<{ url: string; key: string }> {
    const raw = parseInput(z.string({ error: "key is required" }).min(1, { error: "key is required" }).max(900), key, "key");
    const parts = raw.split("/");
    if (raw.startsWith("/") || parts.some((p) => p === "" || p === "." || p === "..") || /[\u0000-\u001f\\]/.test(raw)) {
      throw DomainError.badInput("key: must be a relative path without empty, '.' or '..' segments", "key");
    }
    const confined = `uploads/${principal.userId}/${raw}`;
    return { url: await this.store.presignPut(confined, this.settings.uploadUrlTtlSeconds), key: confined };
  }

  /** Housekeeping: aborts multipart uploads left unfinished past the configured age, and fails their checkpoints. */
  async abortStaleUploads(now = Date.now()): Promise<number> {
    const cutoff = now - this.settings.unfinishedUploadMaxAgeMs;
    let aborted = 0;
    for await (const upload of this.store.listMultipartUploads()) {
      if (upload.initiated.getTime() > cutoff) continue;
      await this.store.abortMultipartUpload(upload.key, upload.uploadId);
      aborted++;
      const file = await this.db.getRepository(CheckpointFileEntity).findOneBy({ uploadId: upload.uploadId });
      if (file) {
        await this.db.getRepository(CheckpointFileEntity).update({ id: file.id }, { uploadId: null });
        await this.transition(file.checkpointId, "Failed", { failureReason: "the upload was not completed in time and was aborted" }, { reason: "upload abandoned" });
      }
    }
    return aborted;
  }

  private async transition(id: string, to: CheckpointStatus, patch: Partial<CheckpointEntity>, data: Record<string, unknown> = {}): Promise<boolean> {
    return this.events.transaction(async (tx, events) => {
      const c = await tx.getRepository(CheckpointEntity).createQueryBuilder("c").setLock("pessimistic_write").where("c.id = :id", { id }).getOne();
      if (!c || !canTransition(c.status, to)) return false;
      if (c.status === to && Object.keys(patch).length === 0) return true;
      await tx.update(CheckpointEntity, { id }, { ...patch, status: to });
      if (c.status !== to) await events.append(id, { type: "status", data: { status: to, previous: c.status, ...data } });
      return true;
    });
  }
}
