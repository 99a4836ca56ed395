import { createHash, randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";

let stack: TestStack;
let base: string;
let admin: string;
let source: Server;
let sourceUrl: string;
const MiB = 1024 * 1024;
const modelBytes = randomBytes(3 * MiB + 123);

/** A loopback file server: /model.safetensors, /dies.safetensors (stops halfway), /to-metadata (redirects to the metadata address). */
function startSource(): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === "/model.safetensors") {
      res.writeHead(200, { "content-length": modelBytes.length, "content-type": "application/octet-stream" });
      res.end(modelBytes);
    } else if (req.url === "/dies.safetensors") {
      res.writeHead(200, { "content-length": 10 * MiB });
      res.write(modelBytes.subarray(0, 2 * MiB), () => setTimeout(() => res.destroy(), 50));
    } else if (req.url === "/to-metadata.safetensors") {
      res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/model.safetensors" });
      res.end();
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function waitFor(id: string, status: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await gql(base, `query($id: ID!) { checkpoint(id: $id) { status failureReason files { name sizeBytes key } } }`, { id }, { key: admin });
    const c = r.body.data?.checkpoint;
    if (c?.status === status) return c;
    if (Date.now() > deadline) throw new Error(`checkpoint ${id} is ${JSON.stringify(c ?? r.body.errors)}, not ${status}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

beforeAll(async () => {
  source = await startSource();
  sourceUrl = `http://127.0.0.1:${(source.address() as AddressInfo).port}`;
  stack = await startTestStack({ worker: true, env: { IMPORT_ALLOW_PRIVATE_HOSTS: `127.0.0.1:${(source.address() as AddressInfo).port}`, IMPORT_PART_SIZE_MB: "5" } });
  base = stack.baseUrl;
  admin = stack.adminKey;
});
afterAll(async () => {
  await stack?.close();
  await new Promise((r) => source?.close(r));
});

describe("checkpoint upload by parts", () => {
  it("uploads a 3-part file through presigned URLs and reads it back byte-identical", async () => {
    const file = randomBytes(11 * MiB + 7);
    const created = await rest(base, "POST", "/checkpoints", {
      key: admin,
      body: { checkpoint_type: "Lora", filenames: [{ filename: "style.safetensors", parts_number: 3, size: file.length }], params: { message: "my lora", creator: "admin" } },
    });
    expect(created.status).toBe(201);
    const cp = created.body.data.checkpoint;
    expect(cp).toMatchObject({ type: "Lora", status: "Initial", name: ["style.safetensors"], params: { message: "my lora", creator: "admin" } });
    expect(cp.s3_location).toBe(`s3://diffgate-test/Lora/checkpoint/custom/${cp.id}`);
    expect(cp.params.multipart_upload["style.safetensors"]).toMatchObject({ bucket: "diffgate-test", key: `Lora/checkpoint/custom/${cp.id}/style.safetensors` });
    const urls: string[] = created.body.data.s3PresignUrl["style.safetensors"];
    expect(urls).toHaveLength(3);
    for (const u of urls) expect(u).not.toContain("x-amz-checksum");

    const parts = [file.subarray(0, 5 * MiB), file.subarray(5 * MiB, 10 * MiB), file.subarray(10 * MiB)];
    const etags = await Promise.all(parts.map(async (p, i) => {
      const res = await fetch(urls[i]!, { method: "PUT", body: new Uint8Array(p) });
      expect(res.status).toBe(200);
      return res.headers.get("etag")!;
    }));
    // Wrong ETag, missing part: refused, saying which.
    const wrong = await rest(base, "PUT", `/checkpoints/${cp.id}`, { key: admin, body: { status: "Active", multi_parts_tags: { "style.safetensors": [etags[0], etags[0], etags[2]] } } });
    expect(wrong.status).toBe(400);
    expect(wrong.body.message).toMatch(/part 2's ETag does not match/);
    const missing = await rest(base, "PUT", `/checkpoints/${cp.id}`, { key: admin, body: { status: "Active", multi_parts_tags: { "style.safetensors": [{ ETag: etags[0], PartNumber: 1 }] } } });
    expect(missing.status).toBe(400);
    expect(missing.body.message).toMatch(/missing 2, 3/);

    const tags = [{ ETag: etags[2], PartNumber: 3 }, { ETag: etags[0], PartNumber: 1 }, { ETag: etags[1], PartNumber: 2 }];
    const done = await rest(base, "PUT", `/checkpoints/${cp.id}`, { key: admin, body: { status: "Active", multi_parts_tags: { "style.safetensors": tags } } });
    expect(done.status).toBe(200);
    expect(done.body.data.checkpoint.status).toBe("Active");
    const again = await rest(base, "PUT", `/checkpoints/${cp.id}`, { key: admin, body: { status: "Active", multi_parts_tags: { "style.safetensors": tags } } });
    expect(again.status).toBe(200);

    const stored = await stack.runtime.storage.getObjectStream(`Lora/checkpoint/custom/${cp.id}/style.safetensors`);
    const chunks: Buffer[] = [];
    for await (const c of stored) chunks.push(c as Buffer);
    expect(createHash("sha256").update(Buffer.concat(chunks)).digest("hex")).toBe(createHash("sha256").update(file).digest("hex"));

    const lora = await rest(base, "GET", "/inference/get-lora-list", { key: admin });
    expect(lora.body).toEqual(["style.safetensors"]);
  });

  it("refuses bad uploads with 4xx that name the field", async () => {
    const post = (body: unknown) => rest(base, "POST", "/checkpoints", { key: admin, body });
    const cases: Array<[unknown, number, RegExp]> = [
      [{ checkpoint_type: "Painting", filenames: [{ filename: "a.safetensors", parts_number: 1 }] }, 400, /^checkpoint_type: must be one of/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "a.safetensors", parts_number: 0 }] }, 400, /parts_?[Nn]umber.*at least 1|at least 1/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "a.safetensors", parts_number: 10001 }] }, 400, /at most 10000/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "dir/a.safetensors", parts_number: 1 }] }, 400, /path separators/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "..safetensors", parts_number: 1 }] }, 400, /"\.\."/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "a\u0000.safetensors", parts_number: 1 }] }, 400, /control characters/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "a.exe", parts_number: 1 }] }, 400, /must end with one of/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "a.safetensors", parts_number: 3, size: 6 * MiB }] }, 400, /smaller than S3's 5 MiB minimum/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "style.safetensors", parts_number: 1 }] }, 409, /style\.safetensors already exists for type Lora/],
      [{ checkpoint_type: "Lora" }, 400, /either filenames .* or urls/],
      [{ checkpoint_type: "Lora", filenames: [{ filename: "b.safetensors", parts_number: 1 }], params: { creator: "someone-else" } }, 403, /creator/],
    ];
    for (const [body, status, message] of cases) {
      const res = await post(body);
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(res.body.message, JSON.stringify(body)).toMatch(message);
    }
    // The same name under another type is fine: names are unique per type.
    expect((await post({ checkpoint_type: "VAE", filenames: [{ filename: "style.safetensors", parts_number: 1 }] })).status).toBe(201);
    // No half-written record was left by the refusals.
    const rows: Array<{ n: number }> = await stack.runtime.db.query(`SELECT count(*)::int AS n FROM checkpoints`);
    expect(rows[0]!.n).toBe(2);
  });

  it("keeps other users' checkpoints out of reach", async () => {
    await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Painter", permissions: ["checkpoint:create", "checkpoint:list"] } });
    await rest(base, "POST", "/users", { key: admin, body: { username: "painter", password: "painter-pass", roles: ["Painter"] } });
    const key = (await gql(base, `mutation { createApiKey(input: { name: "p", username: "painter" }) { apiKey } }`, {}, { key: admin })).body.data.createApiKey.apiKey;
    const list = await rest(base, "GET", "/checkpoints", { key });
    expect(list.body.data).toMatchObject({ total: 0, checkpoints: [] });
    const [adminCp] = (await rest(base, "GET", "/checkpoints?types=Lora", { key: admin })).body.data.checkpoints;
    const complete = await rest(base, "PUT", `/checkpoints/${adminCp.id}`, { key, body: { status: "Disabled" } });
    expect(complete.status).toBe(404);
    const del = await rest(base, "DELETE", "/checkpoints", { key, body: { checkpoint_id_list: [adminCp.id] } });
    expect(del.status).toBe(404);
  });
});

describe("checkpoint import from a URL", () => {
  it("streams the file into the store with progress events, then activates it", async () => {
    const res = await rest(base, "POST", "/checkpoints", { key: admin, body: { checkpoint_type: "Stable-diffusion", urls: [`${sourceUrl}/model.safetensors`], params: { message: "imported" } } });
    expect(res.status).toBe(202);
    const id = res.body.data.checkpoint.id;
    const done = await waitFor(id, "Active");
    expect(done.files[0]).toMatchObject({ name: "model.safetensors", sizeBytes: modelBytes.length });
    const head = await stack.runtime.storage.head(done.files[0].key);
    expect(head?.size).toBe(modelBytes.length);
    const events: Array<{ type: string; seq: number; data: { bytesDone?: number; status?: string } }> = [];
    for await (const e of stack.runtime.events.follow(id, 0)) {
      events.push(e);
      if (e.type === "status" && e.data.status === "Active") break;
    }
    expect(events.filter((e) => e.type === "progress").at(-1)?.data.bytesDone).toBe(modelBytes.length);
  });

  it("ends Failed, without an object or an unfinished upload, when the source dies halfway", async () => {
    const res = await gql(base, `mutation($u: [String!]!) { importCheckpoint(input: { type: "Lora", urls: $u }) { id } }`, { u: [`${sourceUrl}/dies.safetensors`] }, { key: admin });
    const id = res.body.data.importCheckpoint.id;
    const failed = await waitFor(id, "Failed");
    expect(failed.failureReason).toMatch(/import failed/);
    expect(await stack.runtime.storage.head(failed.files[0].key)).toBeUndefined();
    const unfinished = [];
    for await (const u of stack.runtime.storage.listMultipartUploads(`Lora/checkpoint/custom/${id}/`)) unfinished.push(u);
    expect(unfinished).toEqual([]);
  });

  it("refuses a redirect to the metadata address, and non-http or non-model URLs up front", async () => {
    const res = await gql(base, `mutation($u: [String!]!) { importCheckpoint(input: { type: "Lora", urls: $u }) { id } }`, { u: [`${sourceUrl}/to-metadata.safetensors`] }, { key: admin });
    const failed = await waitFor(res.body.data.importCheckpoint.id, "Failed");
    expect(failed.failureReason).toMatch(/^refused: /);
    for (const [url, message] of [
      ["file:///etc/passwd.safetensors", /only http and https/],
      ["ftp://example.com/a.safetensors", /only http and https/],
      ["https://example.com/setup.exe", /setup\.exe/],
      ["not a url", /not a URL/],
    ] as const) {
      const r = await rest(base, "POST", "/checkpoints", { key: admin, body: { checkpoint_type: "Lora", urls: [url] } });
      expect(r.status, url).toBe(400);
      expect(r.body.message, url).toMatch(message);
    }
  });
});

describe("rename, delete and listing", () => {
  it("renames keeping the extension, moves the bytes, and deletes every object", async () => {
    const [cp] = (await rest(base, "GET", "/checkpoints?types=Stable-diffusion&status=Active", { key: admin })).body.data.checkpoints;
    const renamed = await rest(base, "PUT", `/checkpoints/${cp.id}`, { key: admin, body: { name: "v2" } });
    expect(renamed.status).toBe(202);
    expect(renamed.body.data.checkpoint.name).toEqual(["v2.safetensors"]);
    const deadline = Date.now() + 10_000;
    let moved = false;
    while (!moved && Date.now() < deadline) {
      moved = (await stack.runtime.storage.head(`Stable-diffusion/checkpoint/custom/${cp.id}/v2.safetensors`)) !== undefined && (await stack.runtime.storage.head(`Stable-diffusion/checkpoint/custom/${cp.id}/model.safetensors`)) === undefined;
      if (!moved) await new Promise((r) => setTimeout(r, 100));
    }
    expect(moved).toBe(true);
    const badExt = await rest(base, "PUT", `/checkpoints/${cp.id}`, { key: admin, body: { name: "v3.ckpt" } });
    expect(badExt.status).toBe(400);
    const initial = (await rest(base, "GET", "/checkpoints?types=VAE", { key: admin })).body.data.checkpoints[0];
    expect((await rest(base, "PUT", `/checkpoints/${initial.id}`, { key: admin, body: { name: "x" } })).status).toBe(409);

    const del = await rest(base, "DELETE", "/checkpoints", { key: admin, body: { checkpoint_id_list: [cp.id, initial.id] } });
    expect(del.status).toBe(204);
    expect(await stack.runtime.storage.head(`Stable-diffusion/checkpoint/custom/${cp.id}/v2.safetensors`)).toBeUndefined();
    const unfinished = [];
    for await (const u of stack.runtime.storage.listMultipartUploads(`VAE/checkpoint/custom/${initial.id}/`)) unfinished.push(u);
    expect(unfinished).toEqual([]);
  });

  it("pages with keyset cursors and with upstream's page/per_page", async () => {
    for (let i = 0; i < 5; i++) {
      await rest(base, "POST", "/checkpoints", { key: admin, body: { checkpoint_type: "embeddings", filenames: [{ filename: `emb${i}.pt`, parts_number: 1 }] } });
    }
    const seen: string[] = [];
    let after: string | null = null;
    for (let guard = 0; guard < 10; guard++) {
      const r: any = await gql(base, `query($a: String) { checkpoints(filter: { types: ["embeddings"] }, first: 2, after: $a) { edges { node { files { name } } } pageInfo { hasNextPage endCursor } } }`, { a: after }, { key: admin });
      seen.push(...r.body.data.checkpoints.edges.map((e: any) => e.node.files[0].name));
      if (!r.body.data.checkpoints.pageInfo.hasNextPage) break;
      after = r.body.data.checkpoints.pageInfo.endCursor;
    }
    expect(seen).toEqual(["emb4.pt", "emb3.pt", "emb2.pt", "emb1.pt", "emb0.pt"]);
    const page2 = await rest(base, "GET", "/checkpoints?types=embeddings&page=2&per_page=2", { key: admin });
    expect(page2.body.data).toMatchObject({ page: 2, per_page: 2, pages: 3, total: 5 });
    expect(page2.body.data.checkpoints.map((c: any) => c.name[0])).toEqual(["emb2.pt", "emb1.pt"]);
    const bad = await gql(base, `{ checkpoints(after: "garbage") { pageInfo { endCursor } } }`, {}, { key: admin });
    expect(bad.body.errors?.[0]?.extensions).toMatchObject({ code: "BAD_INPUT", field: "after" });
  });

  it("confines presigned uploads to the caller's prefix", async () => {
    const ok = await rest(base, "GET", "/inference/generate-s3-presigned-url-for-uploading?key=config/aigc.json", { key: admin });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatch(/\/uploads\/[0-9a-f-]+\/config\/aigc\.json\?/);
    for (const key of ["../secrets", "/abs", "a//b", "a/./b"]) {
      const r = await rest(base, "GET", `/inference/generate-s3-presigned-url-for-uploading?key=${encodeURIComponent(key)}`, { key: admin });
      expect(r.status, key).toBe(400);
    }
    expect((await rest(base, "GET", "/inference/generate-s3-presigned-url-for-uploading", { key: admin })).status).toBe(400);
  });
});

describe("housekeeping", () => {
  it("aborts uploads left unfinished past the configured age and fails their checkpoints", async () => {
    const created = await rest(base, "POST", "/checkpoints", { key: admin, body: { checkpoint_type: "ControlNet", filenames: [{ filename: "abandoned.pth", parts_number: 2 }] } });
    const id = created.body.data.checkpoint.id;
    const key = `ControlNet/checkpoint/custom/${id}/abandoned.pth`;
    expect(await stack.runtime.checkpoints.abortStaleUploads(Date.now())).toBe(0);
    const aborted = await stack.runtime.checkpoints.abortStaleUploads(Date.now() + 8 * 24 * 3600_000);
    expect(aborted).toBeGreaterThanOrEqual(1);
    const left = [];
    for await (const u of stack.runtime.storage.listMultipartUploads(key)) left.push(u);
    expect(left).toEqual([]);
    const failed = await waitFor(id, "Failed");
    expect(failed.failureReason).toMatch(/not completed in time/);
  });
});
