import { Readable, Transform } from "node:stream";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** S3's limits. */
const MIN_PART_BYTES = 5 * MiB;
const MAX_PART_BYTES = 5 * GiB;
const MAX_PARTS = 10_000;
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
const DELETE_BATCH = 1000;

export interface ObjectStoreSettings {
  bucket: string;
  region: string;
  endpoint?: string;
  forcePathStyle: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Objects larger than this are copied part by part (UploadPartCopy); S3's CopyObject limit is 5 GiB, the default. */
  multipartCopyThresholdBytes?: number;
  /** Part size of a multipart copy; default 512 MiB (raised when the object would need more than 10,000 parts). */
  multipartCopyPartSizeBytes?: number;
  /** Parallel UploadPartCopy requests of one multipart copy; default 4. */
  multipartCopyConcurrency?: number;
}

export interface UploadStreamOptions {
  contentType?: string;
  /** Default 16 MiB; at least 5 MiB. Memory held is about (concurrency + 1) × part size. */
  partSizeBytes?: number;
  /** Parts in flight at once; default 4. */
  concurrency?: number;
  /** Aborting stops reading, cancels the requests in flight and aborts the multipart upload before the promise rejects. */
  signal?: AbortSignal;
  /** Bytes stored so far (reported as each part, or the single PUT, finishes). */
  onProgress?: (bytesUploaded: number) => void;
}

export interface StoredPart {
  partNumber: number;
  /** Without surrounding quotes. */
  etag: string;
  size: number;
}

export interface ObjectHead {
  size: number;
  /** Without surrounding quotes. For multipart objects on real S3 it ends in "-<parts>" (s3rver omits that). */
  etag: string;
  contentType?: string;
}

/** The object store (S3 or compatible). Grows with the checkpoint and inference features. */
export class ObjectStore {
  readonly client: S3Client;

  constructor(readonly settings: ObjectStoreSettings) {
    this.client = new S3Client({
      region: settings.region,
      ...(settings.endpoint ? { endpoint: settings.endpoint, forcePathStyle: settings.forcePathStyle } : {}),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
      // Presigned URLs must not carry a checksum of an empty body (real S3 rejects uploads through them).
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      maxAttempts: 3,
    });
    positive(settings.multipartCopyThresholdBytes, "multipartCopyThresholdBytes");
    positive(settings.multipartCopyPartSizeBytes, "multipartCopyPartSizeBytes");
    positive(settings.multipartCopyConcurrency, "multipartCopyConcurrency");
  }

  get bucket(): string {
    return this.settings.bucket;
  }

  /** Answers when the bucket is reachable with our credentials. */
  async ping(signal?: AbortSignal): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal });
  }

  async ensureBucket(): Promise<void> {
    try {
      await this.ping();
    } catch {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    }
  }

  destroy(): void {
    this.client.destroy();
  }

  // ---- Presigned URLs (signed with this client: no x-amz-checksum-* parameters) ----

  /** A URL to PUT one object. The Content-Type is not part of the signature (only `host` is signed); the uploader should send the same one. */
  async presignPut(key: string, expiresInSeconds: number, contentType?: string): Promise<string> {
    const command = new PutObjectCommand({ Bucket: this.bucket, Key: key, ...(contentType ? { ContentType: contentType } : {}) });
    return getSignedUrl(this.client, command, { expiresIn: presignSeconds(expiresInSeconds) });
  }

  /** A URL to GET one object; with a download name the response says `Content-Disposition: attachment`. */
  async presignGet(key: string, expiresInSeconds: number, downloadName?: string): Promise<string> {
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: key,
      ...(downloadName ? { ResponseContentDisposition: attachmentDisposition(downloadName) } : {}),
    });
    return getSignedUrl(this.client, command, { expiresIn: presignSeconds(expiresInSeconds) });
  }

  // ---- Multipart uploads ----

  /** Starts a multipart upload; returns its UploadId. */
  async createMultipartUpload(key: string, contentType?: string): Promise<string> {
    const out = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, ...(contentType ? { ContentType: contentType } : {}) }));
    if (!out.UploadId) throw new Error(`the object store returned no UploadId for ${key}`);
    return out.UploadId;
  }

  /** A URL to PUT one part; the ETag response header is the part's tag for completion. */
  async presignUploadPart(key: string, uploadId: string, partNumber: number, expiresInSeconds: number): Promise<string> {
    checkPartNumber(partNumber);
    const command = new UploadPartCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, PartNumber: partNumber });
    return getSignedUrl(this.client, command, { expiresIn: presignSeconds(expiresInSeconds) });
  }

  /** Completes an upload. Parts may come in any order and with or without quotes around the ETags. */
  async completeMultipartUpload(key: string, uploadId: string, parts: Array<{ partNumber: number; etag: string }>): Promise<void> {
    if (parts.length === 0) throw new Error("completeMultipartUpload needs at least one part");
    const sorted = [...parts].sort((a, b) => a.partNumber - b.partNumber);
    sorted.forEach((p, i) => {
      checkPartNumber(p.partNumber);
      if (i > 0 && sorted[i - 1]!.partNumber === p.partNumber) throw new Error(`part ${p.partNumber} is given twice`);
    });
    await this.client.send(
      new CompleteMultipartUploadCommand({
        Bucket: this.bucket,
        Key: key,
        UploadId: uploadId,
        MultipartUpload: { Parts: sorted.map((p) => ({ PartNumber: p.partNumber, ETag: quoteEtag(p.etag) })) },
      }),
    );
  }

  /** Every part stored so far for an upload (all pages), by part number. */
  async listParts(key: string, uploadId: string): Promise<StoredPart[]> {
    const parts: StoredPart[] = [];
    let marker: string | undefined;
    for (;;) {
      const out = await this.client.send(new ListPartsCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId, ...(marker !== undefined ? { PartNumberMarker: marker } : {}) }));
      for (const p of out.Parts ?? []) {
        if (p.PartNumber === undefined) continue;
        parts.push({ partNumber: p.PartNumber, etag: unquoteEtag(p.ETag ?? ""), size: p.Size ?? 0 });
      }
      if (!out.IsTruncated) break;
      const next = out.NextPartNumberMarker;
      if (next === undefined || next === marker) throw new Error(`ListParts of ${key} is truncated without a new NextPartNumberMarker`);
      marker = next;
    }
    return parts.sort((a, b) => a.partNumber - b.partNumber);
  }

  /** Aborts an upload; one that is already gone (NoSuchUpload) counts as aborted. */
  async abortMultipartUpload(key: string, uploadId: string): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }));
    } catch (e) {
      if (errorName(e) === "NoSuchUpload") return;
      throw e;
    }
  }

  /** Unfinished multipart uploads (all pages), optionally only those whose key starts with the prefix. */
  async *listMultipartUploads(prefix?: string): AsyncIterable<{ key: string; uploadId: string; initiated: Date }> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const out = await this.client.send(
        new ListMultipartUploadsCommand({
          Bucket: this.bucket,
          ...(prefix ? { Prefix: prefix } : {}),
          ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
          ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
        }),
      );
      for (const u of out.Uploads ?? []) {
        if (!u.Key || !u.UploadId) continue;
        yield { key: u.Key, uploadId: u.UploadId, initiated: u.Initiated ?? new Date(0) };
      }
      if (!out.IsTruncated) return;
      if (out.NextKeyMarker === undefined || (out.NextKeyMarker === keyMarker && out.NextUploadIdMarker === uploadIdMarker)) {
        throw new Error("ListMultipartUploads is truncated without new markers");
      }
      keyMarker = out.NextKeyMarker;
      uploadIdMarker = out.NextUploadIdMarker;
    }
  }

  // ---- Objects ----

  /** Size, ETag and Content-Type of an object; undefined when there is none. */
  async head(key: string): Promise<ObjectHead | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: out.ContentLength ?? 0, etag: unquoteEtag(out.ETag ?? ""), ...(out.ContentType ? { contentType: out.ContentType } : {}) };
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  /** Keys and sizes of every object under a prefix (all pages), in key order. */
  async listObjects(prefix: string): Promise<Array<{ key: string; size: number }>> {
    const out: Array<{ key: string; size: number }> = [];
    let token: string | undefined;
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }));
      for (const o of page.Contents ?? []) if (o.Key) out.push({ key: o.Key, size: o.Size ?? 0 });
      if (!page.IsTruncated) return out;
      if (!page.NextContinuationToken) throw new Error(`ListObjectsV2 under ${prefix} is truncated without a continuation token`);
      token = page.NextContinuationToken;
    }
  }

  /** Deletes one object; deleting a missing one is fine (as in S3). */
  async deleteObject(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  /**
   * Server-side copy within the bucket, keeping Content-Type and metadata. Up to the multipart-copy
   * threshold (5 GiB) one CopyObject; above it a multipart copy (UploadPartCopy by byte ranges, bounded
   * concurrency, pinned to the source's ETag) that is aborted when any part fails.
   */
  async copy(sourceKey: string, destinationKey: string, size?: number): Promise<void> {
    const threshold = this.settings.multipartCopyThresholdBytes ?? MAX_PART_BYTES;
    let objectSize = size;
    if (objectSize === undefined) {
      const head = await this.head(sourceKey);
      if (!head) throw Object.assign(new Error(`cannot copy ${sourceKey}: no such object`), { name: "NoSuchKey" });
      objectSize = head.size;
    }
    if (objectSize <= threshold) {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: destinationKey, CopySource: this.copySource(sourceKey) }));
      return;
    }
    await this.multipartCopy(sourceKey, destinationKey);
  }

  /**
   * Deletes every object under a prefix (which must end in "/"): lists 1,000 keys at a time, deletes
   * each page with one DeleteObjects; returns the number deleted.
   */
  async deletePrefix(prefix: string): Promise<number> {
    if (!prefix || !prefix.endsWith("/") || prefix === "/") throw new Error(`deletePrefix refuses the prefix ${JSON.stringify(prefix)}: it must be non-empty and end in "/"`);
    let deleted = 0;
    let token: string | undefined;
    for (;;) {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, MaxKeys: DELETE_BATCH, ...(token ? { ContinuationToken: token } : {}) }));
      const keys = (page.Contents ?? []).map((o) => o.Key).filter((k): k is string => !!k);
      for (let i = 0; i < keys.length; i += DELETE_BATCH) {
        const batch = keys.slice(i, i + DELETE_BATCH);
        const out = await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }));
        const errors = out.Errors ?? [];
        if (errors.length) {
          const first = errors[0]!;
          throw new Error(`deleting under ${prefix}: ${errors.length} of ${batch.length} objects could not be deleted (first: ${first.Key}: ${first.Code} ${first.Message ?? ""})`.trim());
        }
        deleted += batch.length;
      }
      if (!page.IsTruncated) return deleted;
      if (!page.NextContinuationToken) throw new Error(`ListObjectsV2 under ${prefix} is truncated without a continuation token`);
      token = page.NextContinuationToken;
    }
  }

  /**
   * Streams a body of unknown length into the object: a single PUT when it fits in one part, otherwise a
   * multipart upload with at most `concurrency` parts in flight. On a read error, a failed request or the
   * signal, the multipart upload is aborted before the promise rejects (with the original error) and no
   * object is created.
   */
  async uploadStream(key: string, body: NodeJS.ReadableStream | Readable, options: UploadStreamOptions): Promise<{ size: number }> {
    const { signal } = options;
    const partSize = options.partSizeBytes ?? 16 * MiB;
    const concurrency = options.concurrency ?? 4;
    if (!Number.isInteger(partSize) || partSize < MIN_PART_BYTES || partSize > MAX_PART_BYTES) throw new RangeError(`partSizeBytes must be an integer between 5 MiB and 5 GiB, got ${partSize}`);
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError(`concurrency must be a positive integer, got ${concurrency}`);
    const abortError = (cause: unknown) => Object.assign(new Error(`upload of ${key} aborted`, { cause }), { name: "AbortError" });
    if (signal?.aborted) {
      if (body instanceof Readable) body.destroy();
      throw abortError(signal.reason);
    }

    // Counts bytes and turns a read error or the signal into an error of the stream lib-storage reads.
    let size = 0;
    let sourceError: unknown;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        size += chunk.length;
        done(null, chunk);
      },
    });
    const source = body instanceof Readable ? body : new Readable({ objectMode: false }).wrap(body);
    // Not stream.pipeline: lib-storage destroying `counter` when it gives up must not look like a read error.
    source.on("error", (err) => {
      sourceError ??= err;
      counter.destroy(err);
    });
    source.pipe(counter);
    const onAbort = () => {
      const e = abortError(signal?.reason);
      sourceError ??= e;
      counter.destroy(e);
      source.destroy();
    };
    signal?.addEventListener("abort", onAbort, { once: true });

    // lib-storage does not pass an abort signal to its requests and, when its own abort() is used, rejects
    // before it has aborted the multipart upload. So cancel requests through a client view instead, and
    // let AbortMultipartUpload through: done() then settles only after the cleanup.
    const client = signal ? scopedToSignal(this.client, signal) : this.client;
    const upload = new Upload({
      client,
      params: { Bucket: this.bucket, Key: key, Body: counter, ...(options.contentType ? { ContentType: options.contentType } : {}) },
      partSize,
      queueSize: concurrency,
      leavePartsOnError: false,
    });
    if (options.onProgress) {
      const report = options.onProgress;
      upload.on("httpUploadProgress", (p) => {
        if (p.loaded !== undefined) report(p.loaded);
      });
    }
    try {
      await upload.done();
    } catch (e) {
      // Report what went wrong first (the abort, the read error); a failure while cleaning up (say, of
      // AbortMultipartUpload) goes along as its cause.
      if (signal?.aborted) throw abortError(e === sourceError || isAbortError(e) ? signal.reason : e);
      if (sourceError === undefined || sourceError === e) throw e;
      if (sourceError instanceof Error && sourceError.cause === undefined) sourceError.cause = e;
      throw sourceError;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (!source.destroyed && !source.readableEnded) source.destroy();
    }
    return { size };
  }

  /** Writes a small object in one PutObject. */
  async putObject(key: string, body: string | Buffer, contentType: string): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }));
  }

  /** A small object's bytes, or undefined when it is missing; refuses objects above `maxBytes`. */
  async getBytes(key: string, maxBytes: number): Promise<Buffer | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      if ((out.ContentLength ?? 0) > maxBytes) throw new Error(`object ${key} has ${out.ContentLength} bytes, more than ${maxBytes}`);
      const bytes = Buffer.from((await out.Body?.transformToByteArray()) ?? []);
      if (bytes.length > maxBytes) throw new Error(`object ${key} has more than ${maxBytes} bytes`);
      return bytes;
    } catch (e) {
      if (isMissing(e)) return undefined;
      throw e;
    }
  }

  /** The object's bytes as a stream (rejects with NoSuchKey when it is missing). */
  async getObjectStream(key: string): Promise<Readable> {
    const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
    if (!(out.Body instanceof Readable)) throw new Error(`GetObject ${key} returned no Node.js stream`);
    return out.Body;
  }

  // ---- internals ----

  private copySource(key: string): string {
    return `${this.bucket}/${key.split("/").map(encodeURIComponent).join("/")}`;
  }

  private async multipartCopy(sourceKey: string, destinationKey: string): Promise<void> {
    // The source's current size, type and ETag: the copy keeps the type and refuses a source that changes meanwhile.
    const source = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: sourceKey }));
    const size = source.ContentLength ?? 0;
    const partSize = Math.max(this.settings.multipartCopyPartSizeBytes ?? 512 * MiB, Math.ceil(size / MAX_PARTS));
    const ranges: Array<{ partNumber: number; range: string }> = [];
    for (let start = 0, n = 1; start < size; start += partSize, n++) ranges.push({ partNumber: n, range: `bytes=${start}-${Math.min(start + partSize, size) - 1}` });

    const uploadId = (
      await this.client.send(
        new CreateMultipartUploadCommand({
          Bucket: this.bucket,
          Key: destinationKey,
          ...(source.ContentType ? { ContentType: source.ContentType } : {}),
          ...(source.ContentEncoding ? { ContentEncoding: source.ContentEncoding } : {}),
          ...(source.ContentDisposition ? { ContentDisposition: source.ContentDisposition } : {}),
          ...(source.CacheControl ? { CacheControl: source.CacheControl } : {}),
          ...(source.Metadata ? { Metadata: source.Metadata } : {}),
        }),
      )
    ).UploadId;
    if (!uploadId) throw new Error(`the object store returned no UploadId for ${destinationKey}`);

    const done: Array<{ partNumber: number; etag: string }> = [];
    let failure: { error: unknown } | undefined;
    let next = 0;
    const worker = async () => {
      while (!failure && next < ranges.length) {
        const part = ranges[next++]!;
        try {
          const out = await this.client.send(
            new UploadPartCopyCommand({
              Bucket: this.bucket,
              Key: destinationKey,
              UploadId: uploadId,
              PartNumber: part.partNumber,
              CopySource: this.copySource(sourceKey),
              CopySourceRange: part.range,
              ...(source.ETag ? { CopySourceIfMatch: source.ETag } : {}),
            }),
          );
          const etag = out.CopyPartResult?.ETag;
          if (!etag) throw new Error(`UploadPartCopy of part ${part.partNumber} returned no ETag`);
          done.push({ partNumber: part.partNumber, etag });
        } catch (e) {
          failure ??= { error: e };
        }
      }
    };
    const concurrency = this.settings.multipartCopyConcurrency ?? 4;
    await Promise.all(Array.from({ length: Math.min(concurrency, ranges.length) }, worker));
    if (!failure) {
      try {
        await this.completeMultipartUpload(destinationKey, uploadId, done);
        return;
      } catch (e) {
        failure = { error: e };
      }
    }
    const error = failure.error;
    try {
      await this.abortMultipartUpload(destinationKey, uploadId);
    } catch (abortFailure) {
      if (error instanceof Error && error.cause === undefined) error.cause = abortFailure;
    }
    throw error;
  }
}

/** A view of the client whose requests are cancelled by the signal, except AbortMultipartUpload (the cleanup). */
function scopedToSignal(client: S3Client, signal: AbortSignal): S3Client {
  const scoped = Object.create(client) as S3Client;
  const send = (command: unknown, options?: Record<string, unknown>) => {
    const run = client.send.bind(client) as (c: unknown, o?: Record<string, unknown>) => Promise<unknown>;
    if (command instanceof AbortMultipartUploadCommand) return run(command, options);
    if (signal.aborted) return Promise.reject(Object.assign(new Error("upload aborted"), { name: "AbortError" }));
    return run(command, { ...options, abortSignal: signal });
  };
  Object.defineProperty(scoped, "send", { value: send });
  return scoped;
}

function positive(value: number | undefined, name: string): void {
  if (value !== undefined && (!Number.isInteger(value) || value < 1)) throw new RangeError(`${name} must be a positive integer, got ${value}`);
}

function presignSeconds(seconds: number): number {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_PRESIGN_SECONDS) throw new RangeError(`presigned URLs last 1 to ${MAX_PRESIGN_SECONDS} seconds, got ${seconds}`);
  return seconds;
}

function checkPartNumber(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_PARTS) throw new RangeError(`part numbers are integers from 1 to ${MAX_PARTS}, got ${n}`);
}

function unquoteEtag(etag: string): string {
  return etag.trim().replace(/^"+|"+$/g, "");
}

function quoteEtag(etag: string): string {
  return `"${unquoteEtag(etag)}"`;
}

/** `attachment` with an ASCII fallback name and the exact UTF-8 name (RFC 6266 / 5987). */
function attachmentDisposition(name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}

function errorName(e: unknown): string | undefined {
  if (typeof e !== "object" || e === null) return undefined;
  const err = e as { name?: unknown; Code?: unknown };
  if (typeof err.Code === "string") return err.Code;
  return typeof err.name === "string" ? err.name : undefined;
}

function isMissing(e: unknown): boolean {
  const name = errorName(e);
  const status = (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
  return name === "NotFound" || name === "NoSuchKey" || status === 404;
}

function isAbortError(e: unknown): boolean {
  return errorName(e) === "AbortError";
}
