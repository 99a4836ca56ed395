/** `diffgate upload`: create the checkpoint, PUT the parts to their presigned URLs, complete with the ETags. */
import { stat } from "node:fs/promises";
import path from "node:path";
import { fileNameProblem } from "../domain/checkpoints.js";
import { ApiError, DiffgateClient, type CreatedUpload, type PartTag } from "./api-client.js";
import { UPLOAD_USAGE, UsageError, type UploadCommand } from "./args.js";
import { CancelledError, CliError, messageOf } from "./errors.js";
import { Progress, formatElapsed, formatMiB, formatRate } from "./progress.js";
import type { CliIO } from "./run.js";
import { planParts, uploadParts, type PartFetch, type PartPlan } from "./uploader.js";

const MiB = 1024 * 1024;

export interface UploadDeps {
  /** For the part PUTs (tests inject faults here); the global fetch by default. */
  partFetch?: PartFetch;
  retryBackoffMs?: (attempt: number) => number;
}

async function inspectFile(file: string): Promise<number> {
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new UsageError(`${file}: not a regular file`, UPLOAD_USAGE);
    return info.size;
  } catch (e) {
    if (e instanceof UsageError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new UsageError(`${file}: ${code === "ENOENT" ? "no such file" : messageOf(e)}`, UPLOAD_USAGE);
  }
}

/** Completion is repeatable on the server, so a dropped answer or a 5xx is retried. */
async function complete(api: DiffgateClient, id: string, name: string, tags: PartTag[], signal: AbortSignal): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      const { status } = await api.completeUpload(id, name, tags);
      if (status !== "Active") throw new CliError(`the server completed the upload but the checkpoint is ${status}`);
      return;
    } catch (e) {
      const transient = e instanceof ApiError && (e.status === undefined || e.status >= 500);
      if (!transient || attempt >= 3 || signal.aborted) throw e;
      await new Promise((r) => setTimeout(r, 1000 * attempt));
    }
  }
}

/** Removes the unfinished checkpoint so its name is free for the next try (the server would abort it only days later). */
async function removeUnfinished(command: UploadCommand, id: string, progress: Progress): Promise<void> {
  const api = new DiffgateClient({ baseUrl: command.server, apiKey: command.apiKey, signal: AbortSignal.timeout(15_000) });
  try {
    const state = await api.checkpoint(id).catch(() => undefined);
    if (state?.status === "Active") return;
    await api.deleteCheckpoints([id]);
    progress.note(`Removed the unfinished checkpoint ${id}.`);
  } catch (e) {
    progress.note(`Could not remove the unfinished checkpoint ${id} (${messageOf(e)}); the server aborts it later.`);
  }
}

export async function runUpload(command: UploadCommand, io: CliIO, deps: UploadDeps = {}): Promise<void> {
  const size = await inspectFile(command.file);
  const name = command.name ?? path.basename(command.file);
  const problem = fileNameProblem(name);
  if (problem) {
    throw new UsageError(command.name !== undefined ? `--name: "${name}" ${problem}` : `the file name "${name}" ${problem}; give the name to store it under with --name`, UPLOAD_USAGE);
  }
  if (size === 0) throw new CliError(`${command.file} is empty`);
  let plan: PartPlan;
  try {
    plan = planParts(size, command.partSizeBytes);
  } catch (e) {
    throw new CliError(`${command.file}: ${messageOf(e)}`);
  }
  if (plan.adjustment) io.stderr.write(`Note: ${plan.adjustment}.\n`);

  const api = new DiffgateClient({ baseUrl: command.server, apiKey: command.apiKey, signal: io.signal });
  let created: CreatedUpload;
  try {
    created = await api.createUpload({ type: command.type, fileName: name, partsNumber: plan.partsNumber, sizeBytes: size, message: command.message });
  } catch (e) {
    if (io.signal.aborted) throw new CancelledError("interrupted");
    throw new CliError(`could not start the upload: ${messageOf(e)}`);
  }
  const { id } = created;
  const concurrency = Math.min(command.concurrency, plan.partsNumber);
  const parts = plan.partsNumber === 1 ? "1 part" : `${plan.partsNumber} parts of ${+(plan.partSize / MiB).toFixed(2)} MiB, ${concurrency} at a time`;
  io.stderr.write(`Uploading ${name} (${formatMiB(size)}, ${parts}) as ${command.type} checkpoint ${id}\n`);

  const progress = new Progress({ label: name, total: size, stream: io.stderr });
  try {
    const tags = await uploadParts({
      path: command.file,
      fileSize: size,
      partSize: plan.partSize,
      urls: created.partUrls,
      concurrency,
      signal: io.signal,
      onProgress: (delta) => progress.add(delta),
      onRetry: ({ partNumber, attempt, delayMs, reason }) => progress.note(`Part ${partNumber}: ${reason}; retry ${attempt} of 3 in ${(delayMs / 1000).toFixed(1)} s`),
      ...(deps.partFetch ? { fetch: deps.partFetch } : {}),
      ...(deps.retryBackoffMs ? { backoffMs: deps.retryBackoffMs } : {}),
    });
    const { elapsedMs } = progress.snapshot();
    progress.finish(`Uploaded ${formatMiB(size)} in ${formatElapsed(elapsedMs)} (${formatRate(progress.averageRate())}); completing`);
    await complete(api, id, name, tags, io.signal);
  } catch (e) {
    progress.finish();
    await removeUnfinished(command, id, progress);
    if (io.signal.aborted) throw new CancelledError("upload interrupted");
    throw new CliError(e instanceof ApiError ? `could not complete the upload: ${e.message}` : `upload failed: ${messageOf(e)}`);
  }
  io.stderr.write(`Checkpoint ${id} is Active.\n`);
  io.stdout.write(`${id}\n`);
}
