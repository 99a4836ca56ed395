import { readdir, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";

/**
 * s3rver 3.7.1 lacks the multipart calls Diffgate relies on: ListParts, AbortMultipartUpload,
 * ListMultipartUploads and UploadPartCopy (it answers 405/501), and it answers 500 to completing an
 * unknown upload. This Koa middleware, put in front of s3rver's router, implements them on
 * s3rver's own upload directories, so the embedded store (and the tests) behave like S3 there.
 */

interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  getObject(bucket: string, key: string, options?: { start?: number; end?: number }): Promise<{ content: Readable | null; metadata: Record<string, string> } | null>;
  putPart(bucket: string, uploadId: string, partNumber: number, content: Readable): Promise<{ size: number; md5: string }>;
}

interface KoaContext {
  method: string;
  path: string;
  query: Record<string, string | string[] | undefined>;
  headers: Record<string, string | string[] | undefined>;
  status: number;
  body: unknown;
  type: string;
}

type Next = () => Promise<void>;

const xmlEscape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

function sendXml(ctx: KoaContext, status: number, body: string) {
  ctx.status = status;
  ctx.type = "application/xml";
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
}

function s3Error(ctx: KoaContext, status: number, code: string, message: string) {
  sendXml(ctx, status, `<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error>`);
}

const UPLOAD_ID = /^[0-9a-f]{32}$/;

export function s3rverMultipartExtensions(store: FilesystemStore) {
  const uploadsDir = (bucket: string) => store.getResourcePath(bucket, undefined, "uploads");
  const uploadDir = (bucket: string, uploadId: string) => path.join(uploadsDir(bucket), uploadId);

  async function uploadExists(bucket: string, uploadId: string): Promise<boolean> {
    if (!UPLOAD_ID.test(uploadId)) return false;
    return stat(uploadDir(bucket, uploadId)).then(
      () => true,
      () => false,
    );
  }

  async function listParts(ctx: KoaContext, bucket: string, key: string, uploadId: string) {
    const dir = uploadDir(bucket, uploadId);
    const names = (await readdir(dir)).filter((n) => /^\d+$/.test(n)).map(Number).sort((a, b) => a - b);
    const parts = await Promise.all(
      names.map(async (n) => {
        const [info, md5] = await Promise.all([stat(path.join(dir, String(n))), readFile(path.join(dir, `${n}.md5`), "utf8").catch(() => "")]);
        return `<Part><PartNumber>${n}</PartNumber><LastModified>${info.mtime.toISOString()}</LastModified><ETag>"${md5.trim()}"</ETag><Size>${info.size}</Size></Part>`;
      }),
    );
    sendXml(ctx, 200, `<ListPartsResult><Bucket>${xmlEscape(bucket)}</Bucket><Key>${xmlEscape(key)}</Key><UploadId>${uploadId}</UploadId><IsTruncated>false</IsTruncated>${parts.join("")}</ListPartsResult>`);
  }

  async function listUploads(ctx: KoaContext, bucket: string) {
    const prefix = typeof ctx.query.prefix === "string" ? ctx.query.prefix : "";
    const ids = await readdir(uploadsDir(bucket)).catch(() => [] as string[]);
    const uploads: string[] = [];
    for (const id of ids.filter((i) => UPLOAD_ID.test(i)).sort()) {
      const dir = uploadDir(bucket, id);
      const key = await readFile(path.join(dir, "key"), "utf8").catch(() => undefined);
      if (key === undefined || !key.startsWith(prefix)) continue;
      const initiated = (await stat(path.join(dir, "key"))).mtime;
      uploads.push(`<Upload><Key>${xmlEscape(key)}</Key><UploadId>${id}</UploadId><Initiated>${initiated.toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`);
    }
    sendXml(ctx, 200, `<ListMultipartUploadsResult><Bucket>${xmlEscape(bucket)}</Bucket><Prefix>${xmlEscape(prefix)}</Prefix><IsTruncated>false</IsTruncated>${uploads.join("")}</ListMultipartUploadsResult>`);
  }

  async function uploadPartCopy(ctx: KoaContext, bucket: string, uploadId: string, partNumber: number) {
    const header = String(ctx.headers["x-amz-copy-source"]);
    const source = decodeURIComponent(header.split("?")[0]!).replace(/^\//, "");
    const slash = source.indexOf("/");
    const sourceBucket = source.slice(0, slash);
    const sourceKey = source.slice(slash + 1);
    const rangeHeader = ctx.headers["x-amz-copy-source-range"];
    const range = typeof rangeHeader === "string" ? /^bytes=(\d+)-(\d+)$/.exec(rangeHeader) : null;
    if (typeof rangeHeader === "string" && !range) return s3Error(ctx, 400, "InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last");
    const object = await store.getObject(sourceBucket, sourceKey, range ? { start: Number(range[1]), end: Number(range[2]) } : undefined);
    if (!object || !object.content) return s3Error(ctx, 404, "NoSuchKey", "The specified key does not exist.");
    const { md5 } = await store.putPart(bucket, uploadId, partNumber, object.content);
    sendXml(ctx, 200, `<CopyPartResult><LastModified>${new Date().toISOString()}</LastModified><ETag>"${md5}"</ETag></CopyPartResult>`);
  }

  return async function multipartExtensions(ctx: KoaContext, next: Next): Promise<void> {
    const [, bucket, ...keyParts] = ctx.path.split("/");
    if (!bucket) return next();
    const key = decodeURIComponent(keyParts.join("/"));
    const uploadId = typeof ctx.query.uploadId === "string" ? ctx.query.uploadId : undefined;

    if (ctx.method === "GET" && key === "" && ctx.query.uploads !== undefined) return listUploads(ctx, bucket);
    if (!uploadId || key === "") return next();
    if (!(await uploadExists(bucket, uploadId))) {
      return s3Error(ctx, 404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.");
    }
    if (ctx.method === "GET") return listParts(ctx, bucket, key, uploadId);
    if (ctx.method === "DELETE") {
      await rm(uploadDir(bucket, uploadId), { recursive: true, force: true });
      ctx.status = 204;
      ctx.body = null;
      return;
    }
    if (ctx.method === "PUT" && ctx.headers["x-amz-copy-source"] !== undefined) {
      const partNumber = Number(ctx.query.partNumber);
      if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > 10_000) return s3Error(ctx, 400, "InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive");
      return uploadPartCopy(ctx, bucket, uploadId, partNumber);
    }
    return next();
  };
}
