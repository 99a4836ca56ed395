import { PassThrough } from "node:stream";
import { createGunzip } from "node:zlib";
import type { Logger } from "pino";
import type { EntityManager } from "typeorm";
import { CheckpointEntity, CheckpointFileEntity } from "../adapters/db/entities/checkpoint.entity.js";
import type { ObjectStore } from "../adapters/storage/object-store.js";
import { readTar, TarFormatError } from "../adapters/storage/tar-reader.js";
import { MODEL_FILE_EXTENSIONS, checkpointPrefix, extensionOf, fileNameProblem, type CheckpointSource, type CheckpointType } from "../domain/checkpoints.js";
import type { EventRecorder, EventLog } from "./event-log.js";

/** Where produced model files come from: a gzip'd tar (training artifacts), a tar, or a bare model file. */
export interface ArtifactSource {
  key: string;
  kind: "tar.gz" | "tar" | "file";
}

export interface StoredModelFile {
  name: string;
  key: string;
  size: number;
}

export interface ProducedCheckpoint {
  id: string;
  type: CheckpointType;
  source: CheckpointSource;
  message: string;
  creatorId: string | null;
  allowedRoles: string[];
}

/** A file name already taken for the type (checkpoint_files' unique constraint). */
export class CheckpointNameTaken extends Error {}

/** What was produced cannot become a checkpoint (missing, not a readable archive, no or too many model files): the task fails with this reason. */
export class UnusableArtifact extends Error {}

/** Model files one artifact may give: a training or merge writes one or two; thousands would be a hostile archive. */
export const MAX_PRODUCED_FILES = 20;

const isGzipError = (e: unknown) => /^Z_/.test(String((e as { code?: unknown }).code ?? ""));
const isMissingObject = (e: unknown) => (e as { name?: string }).name === "NoSuchKey";

/**
 * Turns what a training or a merge produced into a new Active checkpoint: the model files are
 * streamed out of the artifact (never held in memory, never written to disk) into the checkpoint's
 * prefix under names chosen here, then the checkpoint and its files are inserted in the caller's
 * transaction, together with the caller's own state change. Every step can be repeated.
 */
export class ProducedCheckpoints {
  constructor(
    private readonly store: ObjectStore,
    private readonly events: EventLog,
    private readonly log: Logger,
  ) {}

  /** Copies the model files of `sources` into the checkpoint's prefix as `<baseName><ext>` (then `-2`, `-3` …), in archive order. */
  async storeModelFiles(sources: ArtifactSource[], type: CheckpointType, checkpointId: string, baseName: string): Promise<StoredModelFile[]> {
    const prefix = checkpointPrefix(type, checkpointId);
    const used = new Set<string>();
    const nameFor = (entry: string): string | undefined => {
      const base = entry.split("/").at(-1) ?? "";
      const ext = extensionOf(base);
      if (!ext || base.startsWith(".")) return undefined;
      if (used.size >= MAX_PRODUCED_FILES) throw new UnusableArtifact(`more than ${MAX_PRODUCED_FILES} model files in ${sources.map((s) => s.key).join(", ")}`);
      let name = `${baseName}${ext}`;
      for (let n = 2; used.has(name); n++) name = `${baseName}-${n}${ext}`;
      if (fileNameProblem(name)) return undefined;
      used.add(name);
      return name;
    };
    const stored: Array<Promise<StoredModelFile>> = [];
    try {
      for (const source of sources) await this.storeSource(source, prefix, nameFor, stored);
    } catch (e) {
      // storeSource ended the open uploads; wait for them so that nothing is written after the failure is reported.
      await Promise.allSettled(stored);
      if (isGzipError(e)) throw new UnusableArtifact(`${sources.map((s) => s.key).join(", ")} is not valid gzip: ${(e as Error).message}`);
      if (isMissingObject(e)) throw new UnusableArtifact(`the produced file is gone: ${(e as Error).message}`);
      if (e instanceof TarFormatError) throw new UnusableArtifact(e.message);
      throw e;
    }
    const files = await Promise.all(stored);
    if (files.length === 0) throw new UnusableArtifact(`no model file (${MODEL_FILE_EXTENSIONS.join(" ")}) in ${sources.map((s) => s.key).join(", ") || "the output"}`);
    return files;
  }

  private async storeSource(source: ArtifactSource, prefix: string, nameFor: (entry: string) => string | undefined, stored: Array<Promise<StoredModelFile>>): Promise<void> {
    if (source.kind === "file") {
      const name = nameFor(source.key);
      if (!name) return;
      const head = await this.store.head(source.key);
      if (!head) throw new UnusableArtifact(`the produced file ${source.key} is gone`);
      await this.store.copy(source.key, `${prefix}${name}`, head.size);
      stored.push(Promise.resolve({ name, key: `${prefix}${name}`, size: head.size }));
      return;
    }
    const body = await this.store.getObjectStream(source.key);
    const input = source.kind === "tar.gz" ? body.pipe(createGunzip()) : body;
    body.on("error", (e) => input.destroy(e));
    const open: PassThrough[] = [];
    const uploads: Array<Promise<StoredModelFile>> = [];
    try {
      await readTar(input, (entry) => {
        const name = nameFor(entry.name);
        if (!name) return undefined;
        const pass = new PassThrough();
        const key = `${prefix}${name}`;
        open.push(pass);
        const upload = this.store.uploadStream(key, pass, { contentType: "application/octet-stream" }).then(
          ({ size }) => ({ name, key, size }),
          (e: unknown) => {
            pass.destroy(e as Error);
            throw e;
          },
        );
        // Awaited below; until then a failed upload must not count as an unhandled rejection (it ends the process).
        upload.catch(() => undefined);
        uploads.push(upload);
        stored.push(upload);
        return pass;
      });
    } catch (e) {
      for (const pass of open) pass.destroy(e as Error);
      body.destroy();
      // When an upload failed, its error says why; the tar read only saw its destination close.
      const failed = (await Promise.allSettled(uploads)).find((r) => r.status === "rejected");
      throw e instanceof TarFormatError || isGzipError(e) || !failed ? e : failed.reason;
    }
  }

  /**
   * Stores the files and registers the checkpoint with `finish` in one transaction. A taken name
   * is retried once with `fallbackName`; the objects of the first try are removed.
   */
  async register(
    checkpoint: ProducedCheckpoint,
    sources: ArtifactSource[],
    names: { base: string; fallback: string },
    finish: (tx: EntityManager, events: EventRecorder) => Promise<void>,
  ): Promise<StoredModelFile[]> {
    const prefix = checkpointPrefix(checkpoint.type, checkpoint.id);
    for (const base of [names.base, names.fallback]) {
      await this.store.deletePrefix(prefix);
      const files = await this.storeModelFiles(sources, checkpoint.type, checkpoint.id, base).catch(async (e: unknown) => {
        // A refused artifact ends the task: the files already copied out of it would belong to no checkpoint.
        if (e instanceof UnusableArtifact) await this.store.deletePrefix(prefix);
        throw e;
      });
      try {
        await this.events.transaction(async (tx, events) => {
          await tx.insert(CheckpointEntity, { id: checkpoint.id, type: checkpoint.type, status: "Active", prefix, source: checkpoint.source, message: checkpoint.message, creatorId: checkpoint.creatorId, allowedRoles: checkpoint.allowedRoles, failureReason: null });
          await tx.insert(
            CheckpointFileEntity,
            files.map((f, i) => ({ checkpointId: checkpoint.id, checkpointType: checkpoint.type, name: f.name, objectKey: f.key, partsNumber: 0, sourceUrl: null, uploadId: null, sizeBytes: String(f.size), position: i })),
          );
          await events.openStream(checkpoint.id, "checkpoint", checkpoint.creatorId);
          await events.append(checkpoint.id, { type: "status", data: { status: "Active", source: checkpoint.source, files: files.map((f) => f.name) } });
          await finish(tx, events);
        });
        return files;
      } catch (e) {
        const err = e as { code?: string; constraint?: string; driverError?: { constraint?: string } };
        if (err.code === "23505" && (err.constraint ?? err.driverError?.constraint) === "UQ_checkpoint_files_type_name" && base !== names.fallback) {
          this.log.info({ checkpointId: checkpoint.id, base }, "checkpoint file name taken; using the fallback name");
          continue;
        }
        if (err.code === "23505" && (err.constraint ?? err.driverError?.constraint) === "UQ_checkpoint_files_type_name") throw new CheckpointNameTaken(`the file names ${files.map((f) => f.name).join(", ")} are taken for type ${checkpoint.type}`);
        throw e;
      }
    }
    throw new CheckpointNameTaken("no free name");
  }
}
