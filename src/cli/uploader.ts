/**
 * Multipart upload of one local file to presigned UploadPart URLs: parts planned within the store's
 * limits, several in flight at once, each streamed from disk with a byte range (memory stays at a
 * few read buffers per part, whatever the file size), a failed part retried with backoff.
 */
import { createReadStream } from "node:fs";
import { MAX_PART_BYTES, MAX_PARTS, MIN_PART_BYTES } from "../domain/checkpoints.js";
import { networkReason, type PartTag } from "./api-client.js";

const MiB = 1024 * 1024;

export interface PartPlan {
  partSize: number;
  partsNumber: number;
  /** Why the requested part size was changed, if it was. */
  adjustment: string | undefined;
}

/**
 * Parts of `fileSize` bytes: the requested size, raised to the store's 5 MiB minimum, and raised
 * (to whole MiB) when the file would need more than 10000 parts.
 */
export function planParts(fileSize: number, requestedPartSize: number): PartPlan {
  if (!Number.isSafeInteger(fileSize) || fileSize <= 0) throw new Error("the file is empty");
  let partSize = Math.ceil(requestedPartSize);
  let adjustment: string | undefined;
  if (partSize < MIN_PART_BYTES) {
    partSize = MIN_PART_BYTES;
    adjustment = "raised the part size to the store's minimum of 5 MiB";
  }
  if (Math.ceil(fileSize / partSize) > MAX_PARTS) {
    partSize = Math.ceil(fileSize / MAX_PARTS / MiB) * MiB;
    adjustment = `raised the part size to ${partSize / MiB} MiB to stay within ${MAX_PARTS} parts`;
  }
  if (partSize > MAX_PART_BYTES) throw new Error(`the file is too large: it would need parts above the store's 5 GiB maximum`);
  return { partSize, partsNumber: Math.ceil(fileSize / partSize), adjustment };
}

/** What the uploader needs of a fetch answer (the global Response has it). */
export interface PartResponse {
  ok: boolean;
  status: number;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
}

export interface PartRequestInit {
  method: "PUT";
  headers: Record<string, string>;
  body: AsyncIterable<Uint8Array>;
  duplex: "half";
  /**
   * Always "error": with "follow", Node's fetch keeps a copy of the whole streamed body to be able to
   * send it again after a redirect (a part's worth of memory per part in flight); a presigned part
   * URL has no business redirecting anyway.
   */
  redirect: "error";
  signal: AbortSignal;
}

/** The global fetch, or a fake of it in tests. */
export type PartFetch = (url: string, init: PartRequestInit) => Promise<PartResponse>;

export interface UploadPartsOptions {
  path: string;
  fileSize: number;
  partSize: number;
  /** One presigned URL per part, part 1 first. */
  urls: readonly string[];
  concurrency: number;
  fetch?: PartFetch;
  /** Retries of a failed part (default 3, so at most 4 attempts). */
  retries?: number;
  /** Delay before retry `attempt` (1-based); default 0.5 s, 1 s, 2 s … plus jitter. */
  backoffMs?: (attempt: number) => number;
  /** An attempt that sends nothing and gets no answer for this long is abandoned and retried (default 2 min). */
  stallTimeoutMs?: number;
  /** Size of each read from disk (default 1 MiB). */
  readChunkBytes?: number;
  signal?: AbortSignal;
  /** Bytes read from disk and handed to the connection; negative when a failed attempt's bytes are taken back. */
  onProgress?: (deltaBytes: number) => void;
  onRetry?: (info: { partNumber: number; attempt: number; delayMs: number; reason: string }) => void;
}

/** A part that failed for good (or an upload that was cancelled). */
export class PartUploadError extends Error {
  constructor(
    message: string,
    readonly partNumber: number,
  ) {
    super(message);
    this.name = "PartUploadError";
  }
}

class AttemptError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

const defaultBackoff = (attempt: number) => 500 * 2 ** (attempt - 1) + Math.floor(Math.random() * 250);

/** The store's error code and message from its XML error body, e.g. "SignatureDoesNotMatch: …". */
function storeError(body: string): string {
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(body)?.[1];
  if (code || message) return [code, message].filter(Boolean).join(": ");
  return body.replace(/\s+/g, " ").trim().slice(0, 200);
}

/** Server trouble and throttling are worth retrying; S3 also reports a stalled body as 400 RequestTimeout. */
function retryableStatus(status: number, body: string): boolean {
  return status >= 500 || status === 408 || status === 429 || (status === 400 && /<Code>RequestTimeout<\/Code>/.test(body));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** Bytes [start, end) of the file, read lazily as the connection takes them: never more than a read buffer ahead. */
async function* fileRange(path: string, start: number, end: number, chunkBytes: number, onChunk: (n: number) => void): AsyncGenerator<Uint8Array> {
  const stream = createReadStream(path, { start, end: end - 1, highWaterMark: chunkBytes });
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      onChunk(chunk.length);
      yield chunk;
    }
  } finally {
    stream.destroy();
  }
}

/**
 * Uploads every part and returns their ETags in part order. The first part that fails for good
 * (after its retries) cancels the others and is thrown as a {@link PartUploadError}.
 */
export async function uploadParts(options: UploadPartsOptions): Promise<PartTag[]> {
  const { path, fileSize, partSize, urls } = options;
  const partsNumber = Math.ceil(fileSize / partSize);
  if (urls.length !== partsNumber) throw new Error(`expected ${partsNumber} part URLs, got ${urls.length}`);
  // Node's fetch (undici) streams an async-iterable body, pulling one chunk at a time; its own types
  // (undici-types BodyInit) allow it, the global RequestInit typing does not.
  const doFetch: PartFetch = options.fetch ?? ((url, init) => fetch(url, { ...init, body: init.body as unknown as NonNullable<RequestInit["body"]> }));
  const retries = options.retries ?? 3;
  const backoff = options.backoffMs ?? defaultBackoff;
  const stallTimeoutMs = options.stallTimeoutMs ?? 120_000;
  const chunkBytes = options.readChunkBytes ?? MiB;
  const progress = options.onProgress ?? (() => undefined);

  // One failure (or the caller's signal) stops every part.
  const stop = new AbortController();
  const onOuterAbort = () => stop.abort(options.signal?.reason);
  if (options.signal?.aborted) onOuterAbort();
  options.signal?.addEventListener("abort", onOuterAbort, { once: true });

  async function attempt(partNumber: number): Promise<string> {
    const start = (partNumber - 1) * partSize;
    const end = Math.min(start + partSize, fileSize);
    const attemptAbort = new AbortController();
    const onStop = () => attemptAbort.abort(stop.signal.reason);
    stop.signal.addEventListener("abort", onStop, { once: true });
    let stalled = false;
    let watchdog: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        stalled = true;
        attemptAbort.abort(new Error("stalled"));
      }, stallTimeoutMs);
    };
    let sent = 0;
    arm();
    try {
      const body = fileRange(path, start, end, chunkBytes, (n) => {
        sent += n;
        progress(n);
        arm();
      });
      let res: PartResponse;
      try {
        res = await doFetch(urls[partNumber - 1]!, {
          method: "PUT",
          headers: { "content-length": String(end - start), "content-type": "application/octet-stream" },
          body,
          duplex: "half",
          redirect: "error",
          signal: attemptAbort.signal,
        });
      } catch (e) {
        if (stop.signal.aborted) throw e;
        throw new AttemptError(stalled ? `no progress for ${Math.round(stallTimeoutMs / 1000)} s` : networkReason(e), true);
      }
      clearTimeout(watchdog);
      const text = await res.text().catch(() => ""); // also frees the connection for the next part
      if (!res.ok) throw new AttemptError(`HTTP ${res.status}${text ? ` (${storeError(text)})` : ""}`, retryableStatus(res.status, text));
      const etag = res.headers.get("etag");
      if (!etag) throw new AttemptError("the store answered without an ETag", true);
      return etag;
    } catch (e) {
      // The bytes of a failed attempt will be sent again.
      if (sent) progress(-sent);
      throw e;
    } finally {
      clearTimeout(watchdog);
      stop.signal.removeEventListener("abort", onStop);
    }
  }

  async function uploadPart(partNumber: number): Promise<string> {
    for (let tries = 0; ; tries++) {
      try {
        return await attempt(partNumber);
      } catch (e) {
        if (stop.signal.aborted) throw e;
        if (!(e instanceof AttemptError)) throw new PartUploadError(`part ${partNumber}: ${(e as Error).message}`, partNumber);
        if (!e.retryable || tries >= retries) {
          const after = tries > 0 ? ` (after ${tries + 1} attempts)` : "";
          throw new PartUploadError(`part ${partNumber} of ${partsNumber} failed${after}: ${e.message}`, partNumber);
        }
        const delayMs = backoff(tries + 1);
        options.onRetry?.({ partNumber, attempt: tries + 1, delayMs, reason: e.message });
        await sleep(delayMs, stop.signal);
      }
    }
  }

  const etags: string[] = new Array<string>(partsNumber);
  let next = 1;
  let failure: unknown;
  async function worker(): Promise<void> {
    while (!stop.signal.aborted && next <= partsNumber) {
      const partNumber = next++;
      try {
        etags[partNumber - 1] = await uploadPart(partNumber);
      } catch (e) {
        if (failure === undefined && !stop.signal.aborted) {
          failure = e;
          stop.abort(e);
        }
        return;
      }
    }
  }

  try {
    await Promise.all(Array.from({ length: Math.min(options.concurrency, partsNumber) }, () => worker()));
  } finally {
    options.signal?.removeEventListener("abort", onOuterAbort);
  }
  if (failure !== undefined) throw failure;
  if (stop.signal.aborted) throw stop.signal.reason instanceof Error ? stop.signal.reason : new PartUploadError("the upload was cancelled", 0);
  return etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 }));
}
