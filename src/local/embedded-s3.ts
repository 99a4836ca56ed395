import { mkdir } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import path from "node:path";
import S3rver from "s3rver";
import { makeS3rverWritesAtomic } from "./s3rver-atomic-writes.js";
import { s3rverMultipartExtensions } from "./s3rver-multipart.js";

export interface RunningS3 {
  endpoint: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  stop(): Promise<void>;
}

/**
 * s3rver in-process on loopback, objects under DATA_DIR/s3, with the multipart calls it lacks
 * added (see s3rver-multipart.ts) and writes made atomic as in S3 (see s3rver-atomic-writes.ts).
 * It does not verify signatures: development only.
 */
export async function startEmbeddedS3(dataDir: string, bucket: string): Promise<RunningS3> {
  const directory = path.join(dataDir, "s3");
  await mkdir(directory, { recursive: true });
  const server = new S3rver({ address: "127.0.0.1", port: 0, directory, silent: true, configureBuckets: [{ name: bucket }] });
  makeS3rverWritesAtomic(server.store);
  // Just before s3rver's router, after its XML encoding and vhost handling.
  server.middleware.splice(server.middleware.length - 1, 0, s3rverMultipartExtensions(server.store) as never);
  const address = (await server.run()) as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    // s3rver's fixed development credentials.
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    stop: () => server.close(),
  };
}
