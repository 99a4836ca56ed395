import { createHash, randomBytes } from "node:crypto";
import { copyFile, mkdir, open, readdir, rename, rmdir, unlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";

/**
 * s3rver 3.7.1 writes objects in place and answers before the bytes are on disk: a GetObject that
 * arrives while a PutObject is being written sees a short or empty object (and may store a wrong
 * ETag computed from it), and a DeleteObject's directory clean-up can race a PutObject into the same
 * folder. S3 itself makes every write atomic. These replacements of the store's methods give the
 * embedded store the same behaviour: an object (with its metadata and ETag) is written to temporary
 * files and renamed into place only when complete, and a read takes one consistent snapshot of the
 * file it opened.
 */

interface S3ObjectLike {
  bucket: string;
  key: string;
  content: Buffer | Readable | null;
  metadata: Record<string, string>;
  range?: { start: number; end: number };
}

interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  getBucketPath(bucket: string): string;
  getMetadata(bucket: string, key: string): Promise<Record<string, string | number>>;
  putObject(object: S3ObjectLike): Promise<{ size: number; md5: string }>;
  getObject(bucket: string, key: string, options?: { start?: number; end?: number }): Promise<S3ObjectLike | null>;
  copyObject(srcBucket: string, srcKey: string, destBucket: string, destKey: string, replacementMetadata?: Record<string, string>): Promise<Record<string, string | number>>;
  deleteObject(bucket: string, key: string): Promise<void>;
}

type S3ObjectClass = new (bucket: string, key: string, content: Readable | null, metadata: Record<string, string | number>) => S3ObjectLike;

const require = createRequire(import.meta.url);
const S3Object = require("s3rver/lib/models/object") as S3ObjectClass & { ALLOWED_METADATA: string[] };

const isCode = (e: unknown, ...codes: string[]) => codes.includes((e as { code?: string }).code ?? "");
const tempName = (finalPath: string) => `${finalPath}.tmp-${randomBytes(6).toString("hex")}`;

/** Stored metadata as s3rver keeps it: the allowed standard headers and every x-amz-meta-*. */
function storedMetadata(metadata: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) if (S3Object.ALLOWED_METADATA.includes(k) || k.startsWith("x-amz-meta-")) out[k] = v;
  return out;
}

async function writeAtomically(finalPath: string, data: string): Promise<void> {
  const tmp = tempName(finalPath);
  await writeFile(tmp, data);
  await rename(tmp, finalPath);
}

/** Runs `write` after making the folder; a concurrent delete may remove an empty folder in between, so once more. */
async function inFolder<T>(dir: string, write: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    await mkdir(dir, { recursive: true });
    try {
      return await write();
    } catch (e) {
      if (attempt < 3 && isCode(e, "ENOENT")) continue;
      throw e;
    }
  }
}

export function makeS3rverWritesAtomic(store: FilesystemStore): void {
  const objectPath = (bucket: string, key: string) => store.getResourcePath(bucket, key, "object");

  store.putObject = async (object) => {
    const finalPath = objectPath(object.bucket, object.key);
    const tmp = tempName(finalPath);
    // Once the temporary file exists its folder is not empty, so no delete's clean-up removes it.
    const file = await inFolder(path.dirname(finalPath), () => open(tmp, "w"));
    const md5 = createHash("md5");
    let size = 0;
    try {
      const source = Buffer.isBuffer(object.content) ? Readable.from([object.content]) : (object.content ?? Readable.from([]));
      const count = new Transform({
        transform(chunk: Buffer, _enc, done) {
          md5.update(chunk);
          size += chunk.length;
          done(null, chunk);
        },
      });
      await pipeline(source, count, file.createWriteStream());
      const digest = md5.digest("hex");
      // Metadata and ETag first: the object becomes visible (stat) only when all three are whole.
      await writeAtomically(store.getResourcePath(object.bucket, object.key, "object.md5"), digest);
      await writeAtomically(store.getResourcePath(object.bucket, object.key, "metadata.json"), JSON.stringify(storedMetadata(object.metadata), null, 2));
      await rename(tmp, finalPath);
      return { size, md5: digest };
    } catch (e) {
      await file.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw e;
    }
  };

  store.getObject = async (bucket, key, options) => {
    let handle;
    try {
      handle = await open(objectPath(bucket, key), "r");
    } catch (e) {
      if (isCode(e, "ENOENT")) return null;
      throw e;
    }
    try {
      // The size and bytes of the file this handle holds, even if a write renames a new one into place.
      const info = await handle.stat();
      const metadata = { ...(await store.getMetadata(bucket, key).catch(() => ({}))), "content-length": info.size, "last-modified": info.mtime.toUTCString() };
      const lastByte = Math.max(0, info.size - 1);
      const ranged = options !== undefined && (options.start !== undefined || options.end !== undefined);
      const range = { start: options?.start ?? 0, end: Math.min(options?.end ?? Infinity, lastByte) };
      if (range.start < 0 || range.end < range.start || info.size === 0) {
        await handle.close();
        const empty = new S3Object(bucket, key, null, metadata);
        if (ranged) empty.range = range;
        return empty;
      }
      const content = handle.createReadStream({ start: range.start, end: range.end, autoClose: true });
      const out = new S3Object(bucket, key, content, metadata);
      if (ranged) out.range = range;
      return out;
    } catch (e) {
      await handle.close().catch(() => undefined);
      if (isCode(e, "ENOENT")) return null;
      throw e;
    }
  };

  store.copyObject = async (srcBucket, srcKey, destBucket, destKey, replacementMetadata) => {
    const src = objectPath(srcBucket, srcKey);
    const dest = objectPath(destBucket, destKey);
    if (src !== dest) {
      const source = await store.getMetadata(srcBucket, srcKey);
      const metadata = replacementMetadata ?? Object.fromEntries(Object.entries(source).map(([k, v]) => [k, String(v)]));
      await inFolder(path.dirname(dest), async () => {
        const tmp = tempName(dest);
        try {
          await copyFile(src, tmp);
          await writeAtomically(store.getResourcePath(destBucket, destKey, "object.md5"), JSON.parse(String(source.etag)) as string);
          await writeAtomically(store.getResourcePath(destBucket, destKey, "metadata.json"), JSON.stringify(storedMetadata(metadata), null, 2));
          await rename(tmp, dest);
        } catch (e) {
          await unlink(tmp).catch(() => undefined);
          throw e;
        }
      });
    } else if (replacementMetadata) {
      await writeAtomically(store.getResourcePath(destBucket, destKey, "metadata.json"), JSON.stringify(storedMetadata(replacementMetadata), null, 2));
    }
    return store.getMetadata(destBucket, destKey);
  };

  store.deleteObject = async (bucket, key) => {
    // The object first: once it is gone the key is gone, whatever happens to its side files.
    for (const resource of ["object", "object.md5", "metadata.json"]) {
      await unlink(store.getResourcePath(bucket, key, resource)).catch((e: unknown) => {
        if (!isCode(e, "ENOENT")) throw e;
      });
    }
    // Empty folders go; one that a concurrent write is filling (or another delete removed) stays as it is.
    const parts = key.split("/").slice(0, -1);
    while (parts.length) {
      const dir = path.join(store.getBucketPath(bucket), ...parts);
      const entries = await readdir(dir).catch(() => null);
      if (entries === null || entries.length) return;
      const removed = await rmdir(dir).then(
        () => true,
        (e: unknown) => {
          if (isCode(e, "ENOENT", "ENOTEMPTY", "EEXIST")) return false;
          throw e;
        },
      );
      if (!removed) return;
      parts.pop();
    }
  };
}
