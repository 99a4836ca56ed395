import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { mockClient } from "aws-sdk-client-mock";
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  NoSuchUpload,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
  UploadPartCommand,
  UploadPartCopyCommand,
} from "@aws-sdk/client-s3";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { ObjectStore } from "../../src/adapters/storage/object-store.js";
import { startEmbeddedS3, type RunningS3 } from "../../src/local/embedded-s3.js";

const MiB = 1024 * 1024;
const bucket = "diffgate-test";

const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

async function readAll(stream: Readable): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { size, sha256: hash.digest("hex") };
}

/** `total` random bytes in 1 MiB chunks; `failAfter` bytes in, the stream errors; `stallAfter` bytes in, it waits forever. */
function generated(total: number, opts: { failAfter?: number; stallAfter?: number } = {}) {
  const hash = createHash("sha256");
  let digest: string | undefined;
  async function* chunks() {
    let sent = 0;
    while (sent < total) {
      if (opts.failAfter !== undefined && sent >= opts.failAfter) throw new Error(`source broke after ${sent} bytes`);
      if (opts.stallAfter !== undefined && sent >= opts.stallAfter) await new Promise(() => undefined);
      const chunk = randomBytes(Math.min(MiB, total - sent));
      hash.update(chunk);
      sent += chunk.length;
      yield chunk;
    }
    digest = hash.digest("hex");
  }
  const stream = Readable.from(chunks(), { objectMode: false });
  return { stream, sha256: () => digest };
}

function checksumParams(url: string): string[] {
  return [...new URL(url).searchParams.keys()].filter((k) => /checksum/i.test(k));
}

describe("ObjectStore against s3rver (real SDK, real HTTP)", () => {
  let dataDir: string;
  let s3: RunningS3;
  let store: ObjectStore;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(os.tmpdir(), "diffgate-object-store-"));
    s3 = await startEmbeddedS3(dataDir, bucket);
    store = new ObjectStore({ bucket, region: "us-east-1", endpoint: s3.endpoint, forcePathStyle: true, credentials: s3.credentials });
  });
  afterAll(async () => {
    store?.destroy();
    await s3?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  async function put(key: string, body: Uint8Array | string, contentType?: string) {
    await store.client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ...(contentType ? { ContentType: contentType } : {}) }));
  }

  it("presigned PUT then GET by plain fetch: byte-identical, no checksum parameters", async () => {
    const data = randomBytes(300 * 1024);
    const putUrl = await store.presignPut("uploads/u1/image.png", 600, "image/png");
    expect(checksumParams(putUrl)).toEqual([]);
    expect(new URL(putUrl).searchParams.get("X-Amz-Expires")).toBe("600");
    expect(new URL(putUrl).searchParams.get("X-Amz-SignedHeaders")).toBe("host");

    const putRes = await fetch(putUrl, { method: "PUT", body: new Uint8Array(data), headers: { "content-type": "image/png" } });
    expect(putRes.status).toBe(200);
    expect((await store.head("uploads/u1/image.png"))).toEqual({ size: data.length, etag: createHash("md5").update(data).digest("hex"), contentType: "image/png" });

    const getUrl = await store.presignGet("uploads/u1/image.png", 60);
    expect(checksumParams(getUrl)).toEqual([]);
    const getRes = await fetch(getUrl);
    expect(getRes.status).toBe(200);
    expect(sha256(new Uint8Array(await getRes.arrayBuffer()))).toBe(sha256(data));
  });

  it("the checksum assertion is not vacuous: a default client's presigned PUT does carry x-amz-checksum-crc32", async () => {
    const plain = new S3Client({ region: "us-east-1", endpoint: s3.endpoint, forcePathStyle: true, credentials: s3.credentials });
    try {
      const url = await getSignedUrl(plain, new PutObjectCommand({ Bucket: bucket, Key: "k" }), { expiresIn: 60 });
      expect(checksumParams(url)).toContain("x-amz-checksum-crc32");
    } finally {
      plain.destroy();
    }
  });

  it("presignGet with a download name makes the response an attachment with that name", async () => {
    await put("out/x.bin", "hello");
    const url = await store.presignGet("out/x.bin", 60, 'réglage "final" 100%.safetensors');
    const res = await fetch(url);
    expect(await res.text()).toBe("hello");
    expect(res.headers.get("content-disposition")).toBe(`attachment; filename="r_glage _final_ 100_.safetensors"; filename*=UTF-8''r%C3%A9glage%20%22final%22%20100%25.safetensors`);
  });

  it("refuses presign lifetimes S3 does not accept", async () => {
    await expect(store.presignPut("k", 0)).rejects.toThrow(RangeError);
    await expect(store.presignGet("k", 7 * 24 * 3600 + 1)).rejects.toThrow(RangeError);
    await expect(store.presignUploadPart("k", "u", 0, 60)).rejects.toThrow(RangeError);
  });

  it("multipart upload through presigned part URLs (5 + 5 + 1 MiB), completed with the parts out of order", async () => {
    const key = "checkpoints/c1/model.safetensors";
    const parts = [randomBytes(5 * MiB), randomBytes(5 * MiB), randomBytes(1 * MiB)];
    const whole = Buffer.concat(parts);
    const uploadId = await store.createMultipartUpload(key, "application/octet-stream");
    expect(uploadId).toMatch(/\S/);

    const etags: string[] = [];
    for (const [i, part] of parts.entries()) {
      const url = await store.presignUploadPart(key, uploadId, i + 1, 600);
      expect(checksumParams(url)).toEqual([]);
      expect(new URL(url).searchParams.get("partNumber")).toBe(String(i + 1));
      expect(new URL(url).searchParams.get("uploadId")).toBe(uploadId);
      const res = await fetch(url, { method: "PUT", body: new Uint8Array(part) });
      expect(res.status).toBe(200);
      const etag = res.headers.get("etag");
      expect(etag).toBe(`"${createHash("md5").update(part).digest("hex")}"`);
      etags.push(etag!);
    }
    // Out of order, and quoted the way clients variously send them.
    await store.completeMultipartUpload(key, uploadId, [
      { partNumber: 3, etag: etags[2]! },
      { partNumber: 1, etag: etags[0]!.replace(/"/g, "") },
      { partNumber: 2, etag: etags[1]! },
    ]);

    const head = await store.head(key);
    expect(head?.size).toBe(whole.length);
    expect(head?.contentType).toBe("application/octet-stream");
    // s3rver's multipart ETag is a plain md5 of the whole object; real S3 answers "<md5 of md5s>-3".
    expect(head?.etag).toBe(createHash("md5").update(whole).digest("hex"));
    expect(await readAll(await store.getObjectStream(key))).toEqual({ size: whole.length, sha256: sha256(whole) });

    // The upload is gone: completing it again fails.
    await expect(store.completeMultipartUpload(key, uploadId, [{ partNumber: 1, etag: etags[0]! }])).rejects.toThrow();
  });

  it("head of a missing key is undefined; deleteObject of a missing key is fine", async () => {
    expect(await store.head("no/such/key")).toBeUndefined();
    await store.deleteObject("no/such/key");
    await put("tmp/gone", "x");
    await store.deleteObject("tmp/gone");
    expect(await store.head("tmp/gone")).toBeUndefined();
    await expect(store.getObjectStream("tmp/gone")).rejects.toMatchObject({ name: "NoSuchKey" });
  });

  it("a read racing a write sees no object or the whole object, never part of it (writes are atomic, as in S3)", async () => {
    const versions = [randomBytes(2 * MiB), randomBytes(3 * MiB)];
    const known = new Set(versions.map(sha256));
    const seen = { missing: 0, whole: 0, partial: [] as number[] };
    let writing = true;
    const reader = (async () => {
      while (writing) {
        const bytes = await store.getBytes("race/doc.out", 10 * MiB);
        if (bytes === undefined) seen.missing++;
        else if (known.has(sha256(bytes))) seen.whole++;
        else seen.partial.push(bytes.length);
      }
    })();
    for (let i = 0; i < 12; i++) {
      await put("race/doc.out", versions[i % 2]!, "application/json");
      if (i % 4 === 2) await store.deleteObject("race/doc.out");
    }
    writing = false;
    await reader;
    expect(seen.partial).toEqual([]);
    expect(seen.whole).toBeGreaterThan(0);
    expect(await store.head("race/doc.out")).toMatchObject({ size: versions[1]!.length, etag: createHash("md5").update(versions[1]!).digest("hex") });
  });

  it("deletes and writes racing in one folder all succeed, and no temporary file is listed", async () => {
    // Each round empties a folder (deleting its only object removes the folder) while another write goes into it.
    const written: string[] = [];
    for (let round = 0; round < 40; round++) {
      const dir = `folder-race/r${round % 4}/deep/`;
      await put(`${dir}old`, "x");
      const key = `${dir}new-${round}`;
      const [deleted, stored] = await Promise.allSettled([store.deleteObject(`${dir}old`), put(key, "y")]);
      expect([deleted.status, stored.status]).toEqual(["fulfilled", "fulfilled"]);
      written.push(key);
    }
    const listed = await store.listObjects("folder-race/");
    expect(listed.map((o) => o.key).sort()).toEqual(written.sort());
  });

  it("copy (CopyObject path) keeps bytes and Content-Type, with and without a known size", async () => {
    const data = randomBytes(64 * 1024);
    await put("copy/src dir/model v1.ckpt", data, "application/x-ckpt");
    await store.copy("copy/src dir/model v1.ckpt", "copy/dst/model v2.ckpt", data.length);
    await store.copy("copy/src dir/model v1.ckpt", "copy/dst/model v3.ckpt");
    for (const key of ["copy/dst/model v2.ckpt", "copy/dst/model v3.ckpt"]) {
      expect((await store.head(key))?.contentType).toBe("application/x-ckpt");
      expect(await readAll(await store.getObjectStream(key))).toEqual({ size: data.length, sha256: sha256(data) });
    }
    await expect(store.copy("copy/missing", "copy/dst/x")).rejects.toMatchObject({ name: "NoSuchKey" });
  });

  it("deletePrefix deletes exactly the objects under the prefix and counts them", async () => {
    const keys = Array.from({ length: 240 }, (_, i) => `ckpt/a/${i % 3 === 0 ? "sub/" : ""}f${String(i).padStart(4, "0")}`);
    for (let i = 0; i < keys.length; i += 40) await Promise.all(keys.slice(i, i + 40).map((k) => put(k, "x")));
    await put("ckpt/ab/keep", "x"); // shares the string prefix "ckpt/a" but is not under "ckpt/a/"
    await put("ckpt/a", "x");

    expect(await store.deletePrefix("ckpt/a/")).toBe(240);
    expect(await store.deletePrefix("ckpt/a/")).toBe(0);
    expect(await store.head("ckpt/a/f0001")).toBeUndefined();
    expect(await store.head("ckpt/ab/keep")).toBeDefined();
    expect(await store.head("ckpt/a")).toBeDefined();
  });

  it("deletePrefix refuses an empty prefix or one not ending in '/'", async () => {
    for (const prefix of ["", "/", "ckpt", "ckpt/a"]) await expect(store.deletePrefix(prefix)).rejects.toThrow(/refuses/);
  });

  it("deletePrefix pages through more than 1,000 objects (s3rver needs --openssl-legacy-provider, which npm test sets)", async () => {
    const keys = Array.from({ length: 1234 }, (_, i) => `bulk/${String(i).padStart(5, "0")}`);
    for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => put(k, "x")));
    expect(await store.deletePrefix("bulk/")).toBe(1234);
    expect(await store.deletePrefix("bulk/")).toBe(0);
  });

  it("uploadStream: 40 MiB of unknown length in 5 MiB parts, with progress, byte-identical", async () => {
    const source = generated(40 * MiB);
    const progress: number[] = [];
    const live = new AbortController(); // a signal that never fires must not get in the way
    const { size } = await store.uploadStream("imports/big.bin", source.stream, { contentType: "application/octet-stream", partSizeBytes: 5 * MiB, concurrency: 3, signal: live.signal, onProgress: (n) => progress.push(n) });
    expect(size).toBe(40 * MiB);
    expect(progress).toHaveLength(8);
    expect(progress.at(-1)).toBe(40 * MiB);
    expect([...progress].sort((a, b) => a - b)).toEqual(progress);
    const head = await store.head("imports/big.bin");
    expect(head).toMatchObject({ size: 40 * MiB, contentType: "application/octet-stream" });
    expect((await readAll(await store.getObjectStream("imports/big.bin"))).sha256).toBe(source.sha256());
  });

  it("uploadStream of a body smaller than one part is a single PUT", async () => {
    const source = generated(100 * 1024);
    const progress: number[] = [];
    expect(await store.uploadStream("imports/small.bin", source.stream, { contentType: "text/plain", onProgress: (n) => progress.push(n) })).toEqual({ size: 100 * 1024 });
    expect(progress).toEqual([100 * 1024]);
    expect(await store.head("imports/small.bin")).toMatchObject({ size: 100 * 1024, contentType: "text/plain" });
  });

  it("uploadStream from a stream that errors halfway rejects with that error and leaves no object or upload", async () => {
    const source = generated(40 * MiB, { failAfter: 12 * MiB });
    const err = await store.uploadStream("imports/broken.bin", source.stream, { partSizeBytes: 5 * MiB, concurrency: 2 }).then(
      () => undefined,
      (e: unknown) => e as Error & { cause?: { name?: string } },
    );
    expect(err?.message).toBe(`source broke after ${12 * MiB} bytes`);
    expect(err?.cause).toBeUndefined();
    expect(await store.head("imports/broken.bin")).toBeUndefined();
    const left = [];
    for await (const u of store.listMultipartUploads("imports/broken")) left.push(u);
    expect(left).toEqual([]);
  });

  it("uploadStream stops on the signal, even when the source stalls, and leaves no object", async () => {
    const source = generated(40 * MiB, { stallAfter: 7 * MiB });
    const controller = new AbortController();
    const started = Date.now();
    const result = store.uploadStream("imports/aborted.bin", source.stream, { partSizeBytes: 5 * MiB, signal: controller.signal, onProgress: () => controller.abort() });
    await expect(result).rejects.toMatchObject({ name: "AbortError", message: "upload of imports/aborted.bin aborted" });
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(source.stream.destroyed).toBe(true);
    expect(await store.head("imports/aborted.bin")).toBeUndefined();
    await expect(store.uploadStream("imports/aborted.bin", generated(10).stream, { signal: controller.signal })).rejects.toMatchObject({ name: "AbortError" });
  });

  /** s3rver 3.7.1 lacks these; the embedded store adds them (src/local/s3rver-multipart.ts). */
  it("lists parts, lists and aborts unfinished uploads, and copies by UploadPartCopy on the embedded store", async () => {
    const uploadId = await store.createMultipartUpload("limits/m");
    const url = await store.presignUploadPart("limits/m", uploadId, 1, 600);
    const res = await fetch(url, { method: "PUT", body: new Uint8Array(randomBytes(1000)) });
    expect(res.status).toBe(200);
    const parts = await store.listParts("limits/m", uploadId);
    expect(parts).toEqual([{ partNumber: 1, etag: res.headers.get("etag")!.replace(/"/g, ""), size: 1000 }]);
    const listed = [];
    for await (const u of store.listMultipartUploads("limits/")) listed.push(u);
    expect(listed.map((u) => [u.key, u.uploadId])).toEqual([["limits/m", uploadId]]);
    expect(listed[0]!.initiated).toBeInstanceOf(Date);
    await store.abortMultipartUpload("limits/m", uploadId);
    await store.abortMultipartUpload("limits/m", uploadId); // already gone: fine
    await expect(store.listParts("limits/m", uploadId)).rejects.toMatchObject({ name: "NoSuchUpload", $metadata: { httpStatusCode: 404 } });

    // The multipart copy path, forced with a tiny threshold: UploadPartCopy in ranges, byte-identical.
    const small = new ObjectStore({ ...store.settings, multipartCopyThresholdBytes: 1024, multipartCopyPartSizeBytes: 1024 });
    try {
      const bytes = randomBytes(3000);
      await put("limits/src", bytes);
      await small.copy("limits/src", "limits/dst");
      expect(await small.head("limits/dst")).toMatchObject({ size: 3000 });
      const chunks: Buffer[] = [];
      for await (const c of await small.getObjectStream("limits/dst")) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    } finally {
      small.destroy();
    }
  });
});

describe("ObjectStore requests (mocked S3 client): paging, failures and exact inputs", () => {
  const store = new ObjectStore({
    bucket: "bkt",
    region: "eu-west-1",
    forcePathStyle: false,
    credentials: { accessKeyId: "AKIDEXAMPLE", secretAccessKey: "secret" },
    multipartCopyThresholdBytes: 10 * MiB,
    multipartCopyPartSizeBytes: 5 * MiB,
    multipartCopyConcurrency: 2,
  });
  const s3 = mockClient(store.client);
  afterEach(() => s3.reset());
  afterAll(() => {
    s3.restore();
    store.destroy();
  });

  const inputs = <T>(command: new (...args: never[]) => T) => s3.commandCalls(command as never).map((c) => c.args[0].input as Record<string, unknown>);
  const s3Error = (name: string, status: number) => new S3ServiceException({ name, $fault: status < 500 ? "client" : "server", $metadata: { httpStatusCode: status }, message: name });

  it("completeMultipartUpload sends the parts sorted by number with quoted ETags, and refuses duplicates", async () => {
    s3.on(CompleteMultipartUploadCommand).resolves({});
    await store.completeMultipartUpload("k", "u-1", [
      { partNumber: 3, etag: "c" },
      { partNumber: 1, etag: '"a"' },
      { partNumber: 2, etag: ' "b" ' },
    ]);
    expect(inputs(CompleteMultipartUploadCommand)).toEqual([
      { Bucket: "bkt", Key: "k", UploadId: "u-1", MultipartUpload: { Parts: [{ PartNumber: 1, ETag: '"a"' }, { PartNumber: 2, ETag: '"b"' }, { PartNumber: 3, ETag: '"c"' }] } },
    ]);
    await expect(store.completeMultipartUpload("k", "u-1", [{ partNumber: 1, etag: "a" }, { partNumber: 1, etag: "b" }])).rejects.toThrow(/twice/);
    await expect(store.completeMultipartUpload("k", "u-1", [])).rejects.toThrow(/at least one part/);
  });

  it("listParts pages with PartNumberMarker and returns unquoted ETags with sizes", async () => {
    s3.on(ListPartsCommand, { PartNumberMarker: undefined })
      .resolves({ Parts: [{ PartNumber: 1, ETag: '"e1"', Size: 5 * MiB }, { PartNumber: 2, ETag: '"e2"', Size: 5 * MiB }], IsTruncated: true, NextPartNumberMarker: "2" })
      .on(ListPartsCommand, { PartNumberMarker: "2" })
      .resolves({ Parts: [{ PartNumber: 3, ETag: '"e3"', Size: 1024 }], IsTruncated: false });
    expect(await store.listParts("k", "u-1")).toEqual([
      { partNumber: 1, etag: "e1", size: 5 * MiB },
      { partNumber: 2, etag: "e2", size: 5 * MiB },
      { partNumber: 3, etag: "e3", size: 1024 },
    ]);
    expect(inputs(ListPartsCommand)).toEqual([
      { Bucket: "bkt", Key: "k", UploadId: "u-1" },
      { Bucket: "bkt", Key: "k", UploadId: "u-1", PartNumberMarker: "2" },
    ]);
  });

  it("abortMultipartUpload: NoSuchUpload counts as done, other errors are thrown", async () => {
    s3.on(AbortMultipartUploadCommand, { UploadId: "gone" }).rejects(new NoSuchUpload({ $metadata: { httpStatusCode: 404 }, message: "The specified upload does not exist." }));
    s3.on(AbortMultipartUploadCommand, { UploadId: "denied" }).rejects(s3Error("AccessDenied", 403));
    s3.on(AbortMultipartUploadCommand, { UploadId: "live" }).resolves({});
    await store.abortMultipartUpload("k", "live");
    await store.abortMultipartUpload("k", "gone");
    await expect(store.abortMultipartUpload("k", "denied")).rejects.toMatchObject({ name: "AccessDenied" });
    expect(inputs(AbortMultipartUploadCommand)).toEqual([
      { Bucket: "bkt", Key: "k", UploadId: "live" },
      { Bucket: "bkt", Key: "k", UploadId: "gone" },
      { Bucket: "bkt", Key: "k", UploadId: "denied" },
    ]);
  });

  it("listMultipartUploads pages with KeyMarker and UploadIdMarker", async () => {
    const t1 = new Date("2030-01-01T00:00:00Z");
    const t2 = new Date("2030-01-02T00:00:00Z");
    s3.on(ListMultipartUploadsCommand, { KeyMarker: undefined })
      .resolves({ Uploads: [{ Key: "checkpoints/a", UploadId: "u1", Initiated: t1 }, { Key: "checkpoints/b", UploadId: "u2", Initiated: t2 }], IsTruncated: true, NextKeyMarker: "checkpoints/b", NextUploadIdMarker: "u2" })
      .on(ListMultipartUploadsCommand, { KeyMarker: "checkpoints/b" })
      .resolves({ Uploads: [{ Key: "checkpoints/c", UploadId: "u3", Initiated: t2 }], IsTruncated: false });
    const seen = [];
    for await (const u of store.listMultipartUploads("checkpoints/")) seen.push(u);
    expect(seen).toEqual([
      { key: "checkpoints/a", uploadId: "u1", initiated: t1 },
      { key: "checkpoints/b", uploadId: "u2", initiated: t2 },
      { key: "checkpoints/c", uploadId: "u3", initiated: t2 },
    ]);
    expect(inputs(ListMultipartUploadsCommand)).toEqual([
      { Bucket: "bkt", Prefix: "checkpoints/" },
      { Bucket: "bkt", Prefix: "checkpoints/", KeyMarker: "checkpoints/b", UploadIdMarker: "u2" },
    ]);
  });

  it("copy at or below the threshold is one CopyObject with a URL-encoded source", async () => {
    s3.on(CopyObjectCommand).resolves({});
    await store.copy("src/a b+c.bin", "dst/x.bin", 10 * MiB);
    expect(inputs(CopyObjectCommand)).toEqual([{ Bucket: "bkt", Key: "dst/x.bin", CopySource: "bkt/src/a%20b%2Bc.bin" }]);
    expect(inputs(HeadObjectCommand)).toEqual([]);
    expect(inputs(CreateMultipartUploadCommand)).toEqual([]);
  });

  it("copy above the threshold: UploadPartCopy in byte ranges, at most 2 at once, pinned to the source ETag, then completed in order", async () => {
    const size = 23 * MiB; // parts of 5 MiB: 5 + 5 + 5 + 5 + 3
    s3.on(HeadObjectCommand).resolves({ ContentLength: size, ContentType: "application/x-safetensors", ETag: '"src-etag"' });
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: "copy-1" });
    s3.on(CompleteMultipartUploadCommand).resolves({});
    let inFlight = 0;
    let maxInFlight = 0;
    s3.on(UploadPartCopyCommand).callsFake(async (input: { PartNumber: number }) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await sleep(30 - input.PartNumber * 5); // later parts finish first
      inFlight--;
      return { CopyPartResult: { ETag: `"p${input.PartNumber}"` } };
    });

    await store.copy("ckpt/old.safetensors", "ckpt/new.safetensors", size);

    expect(inputs(HeadObjectCommand)).toEqual([{ Bucket: "bkt", Key: "ckpt/old.safetensors" }]);
    expect(inputs(CreateMultipartUploadCommand)).toEqual([{ Bucket: "bkt", Key: "ckpt/new.safetensors", ContentType: "application/x-safetensors" }]);
    const ranges = ["bytes=0-5242879", "bytes=5242880-10485759", "bytes=10485760-15728639", "bytes=15728640-20971519", "bytes=20971520-24117247"];
    expect(inputs(UploadPartCopyCommand).sort((a, b) => (a.PartNumber as number) - (b.PartNumber as number))).toEqual(
      ranges.map((range, i) => ({
        Bucket: "bkt",
        Key: "ckpt/new.safetensors",
        UploadId: "copy-1",
        PartNumber: i + 1,
        CopySource: "bkt/ckpt/old.safetensors",
        CopySourceRange: range,
        CopySourceIfMatch: '"src-etag"',
      })),
    );
    expect(maxInFlight).toBe(2);
    expect(inputs(CompleteMultipartUploadCommand)).toEqual([
      { Bucket: "bkt", Key: "ckpt/new.safetensors", UploadId: "copy-1", MultipartUpload: { Parts: [1, 2, 3, 4, 5].map((n) => ({ PartNumber: n, ETag: `"p${n}"` })) } },
    ]);
    expect(inputs(AbortMultipartUploadCommand)).toEqual([]);
    expect(inputs(CopyObjectCommand)).toEqual([]);
  });

  it("copy above the threshold learns the size from HeadObject when not given", async () => {
    s3.on(HeadObjectCommand).resolves({ ContentLength: 11 * MiB, ETag: '"e"' });
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: "copy-2" });
    s3.on(UploadPartCopyCommand).callsFake(async (input: { PartNumber: number }) => ({ CopyPartResult: { ETag: `"p${input.PartNumber}"` } }));
    s3.on(CompleteMultipartUploadCommand).resolves({});
    await store.copy("a", "b");
    expect(inputs(UploadPartCopyCommand).map((i) => i.CopySourceRange).sort()).toEqual(["bytes=0-5242879", "bytes=10485760-11534335", "bytes=5242880-10485759"]);
    expect(inputs(CopyObjectCommand)).toEqual([]);
  });

  it("a failing UploadPartCopy aborts the multipart copy and rejects with that error", async () => {
    s3.on(HeadObjectCommand).resolves({ ContentLength: 23 * MiB, ETag: '"src-etag"' });
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: "copy-3" });
    s3.on(UploadPartCopyCommand).callsFake(async (input: { PartNumber: number }) => {
      if (input.PartNumber === 2) throw s3Error("PreconditionFailed", 412);
      return { CopyPartResult: { ETag: `"p${input.PartNumber}"` } };
    });
    s3.on(AbortMultipartUploadCommand).resolves({});
    await expect(store.copy("a", "b", 23 * MiB)).rejects.toMatchObject({ name: "PreconditionFailed" });
    expect(inputs(AbortMultipartUploadCommand)).toEqual([{ Bucket: "bkt", Key: "b", UploadId: "copy-3" }]);
    expect(inputs(CompleteMultipartUploadCommand)).toEqual([]);
    expect(inputs(UploadPartCopyCommand).length).toBeLessThan(5); // stopped early
  });

  it("deletePrefix pages with ContinuationToken, deletes each page in one quiet DeleteObjects, and fails on per-key errors", async () => {
    const page1 = Array.from({ length: 1000 }, (_, i) => ({ Key: `p/${i}` }));
    const page2 = Array.from({ length: 234 }, (_, i) => ({ Key: `p/x${i}` }));
    s3.on(ListObjectsV2Command, { ContinuationToken: undefined })
      .resolves({ Contents: page1, IsTruncated: true, NextContinuationToken: "t1" })
      .on(ListObjectsV2Command, { ContinuationToken: "t1" })
      .resolves({ Contents: page2, IsTruncated: false });
    s3.on(DeleteObjectsCommand).resolves({});
    expect(await store.deletePrefix("p/")).toBe(1234);
    expect(inputs(ListObjectsV2Command)).toEqual([
      { Bucket: "bkt", Prefix: "p/", MaxKeys: 1000 },
      { Bucket: "bkt", Prefix: "p/", MaxKeys: 1000, ContinuationToken: "t1" },
    ]);
    expect(inputs(DeleteObjectsCommand)).toEqual([
      { Bucket: "bkt", Delete: { Objects: page1, Quiet: true } },
      { Bucket: "bkt", Delete: { Objects: page2, Quiet: true } },
    ]);

    s3.reset();
    s3.on(ListObjectsV2Command).resolves({ Contents: [{ Key: "p/1" }, { Key: "p/2" }], IsTruncated: false });
    s3.on(DeleteObjectsCommand).resolves({ Errors: [{ Key: "p/2", Code: "AccessDenied", Message: "Access Denied" }] });
    await expect(store.deletePrefix("p/")).rejects.toThrow(/1 of 2 objects could not be deleted \(first: p\/2: AccessDenied Access Denied\)/);
  });

  it("uploadStream keeps at most `concurrency` parts in flight and completes with every part", async () => {
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: "up-1" });
    let inFlight = 0;
    let maxInFlight = 0;
    s3.on(UploadPartCommand).callsFake(async (input: { PartNumber: number }) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await sleep(20);
      inFlight--;
      return { ETag: `"e${input.PartNumber}"` };
    });
    s3.on(CompleteMultipartUploadCommand).resolves({});
    const { size } = await store.uploadStream("k", generated(26 * MiB).stream, { partSizeBytes: 5 * MiB, concurrency: 2, contentType: "application/octet-stream" });
    expect(size).toBe(26 * MiB);
    expect(maxInFlight).toBe(2);
    expect(inputs(CreateMultipartUploadCommand)).toEqual([{ Bucket: "bkt", Key: "k", ContentType: "application/octet-stream" }]);
    expect(inputs(CompleteMultipartUploadCommand)[0]?.MultipartUpload).toEqual({ Parts: [1, 2, 3, 4, 5, 6].map((n) => ({ PartNumber: n, ETag: `"e${n}"` })) });
  });

  it("uploadStream from a stream that errors halfway aborts the multipart upload and completes nothing", async () => {
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: "up-2" });
    s3.on(UploadPartCommand).callsFake(async (input: { PartNumber: number }) => ({ ETag: `"e${input.PartNumber}"` }));
    s3.on(AbortMultipartUploadCommand).resolves({});
    const err = await store.uploadStream("k", generated(40 * MiB, { failAfter: 12 * MiB }).stream, { partSizeBytes: 5 * MiB }).catch((e: Error) => e);
    expect(err).toMatchObject({ message: `source broke after ${12 * MiB} bytes` });
    expect((err as Error).cause).toBeUndefined();
    expect(inputs(AbortMultipartUploadCommand)).toEqual([{ Bucket: "bkt", Key: "k", UploadId: "up-2" }]);
    expect(inputs(CompleteMultipartUploadCommand)).toEqual([]);
    expect(inputs(PutObjectCommand)).toEqual([]);
  });

  it("uploadStream aborted by the signal aborts the multipart upload before rejecting", async () => {
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: "up-3" });
    s3.on(UploadPartCommand).callsFake(async (input: { PartNumber: number }) => {
      await sleep(10);
      return { ETag: `"e${input.PartNumber}"` };
    });
    s3.on(AbortMultipartUploadCommand).resolves({});
    const controller = new AbortController();
    const reason = new Error("job cancelled");
    const err = await store
      .uploadStream("k", generated(40 * MiB).stream, { partSizeBytes: 5 * MiB, signal: controller.signal, onProgress: () => controller.abort(reason) })
      .catch((e: Error) => e);
    expect(err).toMatchObject({ name: "AbortError", cause: reason });
    expect(inputs(AbortMultipartUploadCommand)).toEqual([{ Bucket: "bkt", Key: "k", UploadId: "up-3" }]);
    expect(inputs(CompleteMultipartUploadCommand)).toEqual([]);
  });
});
