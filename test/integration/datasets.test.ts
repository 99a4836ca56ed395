import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";

let stack: TestStack;
let base: string;
let admin: string;

beforeAll(async () => {
  stack = await startTestStack({ env: { DATASET_MAX_FILES: "40" } });
  base = stack.baseUrl;
  admin = stack.adminKey;
});
afterAll(async () => {
  await stack?.close();
});

const files = Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? `img${i}.png` : `img${i - 1}.txt`));
const bytes = new Map(files.map((f) => [f, randomBytes(200 + files.indexOf(f))]));

describe("dataset upload", () => {
  it("creates 30 upload URLs, enables only once every file exists, and lists items with working previews", async () => {
    const content = files.map((filename) => ({ filename, name: filename, type: filename.endsWith(".png") ? "image" : "caption", params: {} }));
    const created = await rest(base, "POST", "/datasets", { key: admin, body: { dataset_name: "faces_v1", content, creator: "admin", params: { description: "thirty files" } } });
    expect(created.status, created.text).toBe(201);
    expect(created.body.data.datasetName).toBe("faces_v1");
    const urls: Record<string, string> = created.body.data.s3PresignUrl;
    expect(Object.keys(urls).sort()).toEqual([...files].sort());
    expect(created.body.data.dataset).toMatchObject({ status: "Initialed", s3: "s3://diffgate-test/dataset/faces_v1", description: "thirty files", file_count: 30 });

    // Upload all but one, and try to enable: 409 naming the missing file.
    const missing = files[7]!;
    for (const f of files) {
      if (f === missing) continue;
      const res = await fetch(urls[f]!, { method: "PUT", body: new Uint8Array(bytes.get(f)!) });
      expect(res.status, f).toBe(200);
    }
    const early = await rest(base, "PUT", "/datasets/faces_v1", { key: admin, body: { status: "Enabled" } });
    expect(early.status).toBe(409);
    expect(early.body.message).toContain(missing);
    expect(early.body.message).toMatch(/1 file\(s\) not uploaded/);
    expect((await rest(base, "GET", "/datasets/faces_v1", { key: admin })).body.data.status).toBe("Initialed");
    // Disabled only after it was Enabled.
    expect((await rest(base, "PUT", "/datasets/faces_v1", { key: admin, body: { status: "Disabled" } })).status).toBe(409);

    await fetch(urls[missing]!, { method: "PUT", body: new Uint8Array(bytes.get(missing)!) });
    const enabled = await rest(base, "PUT", "/datasets/faces_v1", { key: admin, body: { status: "Enabled", dataset_name: "faces_v1" } });
    expect(enabled.status, enabled.text).toBe(200);
    expect(enabled.body.data).toMatchObject({ datasetName: "faces_v1", status: "Enabled" });

    const list = await rest(base, "GET", "/datasets?dataset_status=Enabled", { key: admin });
    expect(list.status).toBe(200);
    expect(list.body.data.datasets.map((d: any) => d.datasetName)).toEqual(["faces_v1"]);
    expect((await rest(base, "GET", "/datasets?dataset_status=Disabled", { key: admin })).body.data.datasets).toEqual([]);
    expect((await rest(base, "GET", "/datasets?dataset_status=Bogus", { key: admin })).status).toBe(400);

    const detail = await rest(base, "GET", "/datasets/faces_v1", { key: admin });
    expect(detail.status).toBe(200);
    const d = detail.body.data;
    expect(d).toMatchObject({ dataset_name: "faces_v1", datasetName: "faces_v1", status: "Enabled", s3: "s3://diffgate-test/dataset/faces_v1", description: "thirty files" });
    expect(d.data).toHaveLength(30);
    const item = d.data.find((i: any) => i.name === "img4.png");
    expect(item).toMatchObject({ type: "image", dataStatus: "Enabled", original_file_name: "img4.png", s3_key: "dataset/faces_v1/img4.png" });
    expect(item.key).toMatch(/^\d+(\.\d+)?_img4\.png$/);
    const preview = await fetch(item.preview_url);
    expect(preview.status).toBe(200);
    expect(Buffer.from(await preview.arrayBuffer()).equals(bytes.get("img4.png")!)).toBe(true);

    // GraphQL sees the same, with preview URLs.
    const g = await gql(base, `query { dataset(name: "faces_v1") { status fileCount items { filename previewUrl } } datasets(status: "Enabled") { name items { filename } } }`, {}, { key: admin });
    expect(g.body.errors).toBeUndefined();
    expect(g.body.data.dataset).toMatchObject({ status: "Enabled", fileCount: 30 });
    expect(g.body.data.dataset.items[0].previewUrl).toMatch(/^http/);
    expect(g.body.data.datasets).toEqual([{ name: "faces_v1", items: null }]);

    // Disabled and Enabled toggle thereafter.
    const off = await gql(base, `mutation { setDatasetStatus(name: "faces_v1", status: "Disabled") { status } }`, {}, { key: admin });
    expect(off.body.data.setDatasetStatus.status).toBe("Disabled");
    expect((await rest(base, "PUT", "/datasets/faces_v1", { key: admin, body: { status: "Enabled" } })).body.data.status).toBe("Enabled");

    // The event stream recorded the status changes.
    const statuses: string[] = [];
    const it = await stack.runtime.datasets.follow(await stack.runtime.access.authenticate({ apiKey: admin }), "faces_v1", 0);
    for await (const e of it) {
      statuses.push(String(e.data.status));
      if (statuses.length === 4) break;
    }
    expect(statuses).toEqual(["Initialed", "Enabled", "Disabled", "Enabled"]);
  });

  it("refuses an existing name with 409, not an overwrite", async () => {
    const again = await rest(base, "POST", "/datasets", { key: admin, body: { dataset_name: "faces_v1", content: [{ filename: "x.png", name: "x.png", type: "image", params: {} }], params: {} } });
    expect(again.status).toBe(409);
    expect(again.body.message).toMatch(/faces_v1 already exists/);
    const detail = await rest(base, "GET", "/datasets/faces_v1", { key: admin });
    expect(detail.body.data.data).toHaveLength(30);
    const g = await gql(base, `mutation { createDataset(input: { name: "faces_v1", files: [{ filename: "x.png", type: "image" }] }) { dataset { name } } }`, {}, { key: admin });
    expect(g.body.errors?.[0]?.extensions?.code).toBe("CONFLICT");
  });

  it("refuses bad file names, too many files and bad dataset names, naming the field", async () => {
    const post = (dataset_name: unknown, content: unknown) => rest(base, "POST", "/datasets", { key: admin, body: { dataset_name, content } });
    const one = (filename: string) => [{ filename, name: filename, type: "image" }];
    const cases: Array<[unknown, unknown, number, RegExp]> = [
      ["ok1", one("dir/a.png"), 400, /^content\.0\.filename: must not contain path separators/],
      ["ok1", one("dir\\a.png"), 400, /path separators/],
      ["ok1", one("..png"), 400, /"\.\."/],
      ["ok1", one("a\u0000.png"), 400, /control characters/],
      ["ok1", one("a.exe"), 400, /must end with one of \.png \.jpg \.jpeg \.webp \.bmp \.txt \.caption \.json/],
      ["ok1", one("x".repeat(256) + ".png"), 400, /at most 255/],
      ["ok1", [...one("a.png"), ...one("a.png")], 400, /a\.png is listed twice/],
      ["ok1", Array.from({ length: 41 }, (_, i) => ({ filename: `f${i}.png`, type: "image" })), 400, /^content: at most 40 files/],
      ["ok1", [], 400, /^content: must name at least one file/],
      ["ok1", [{ filename: "a.png" }], 400, /^content\.0\.type/],
      ["1abc", one("a.png"), 400, /^dataset_name: must start with a letter/],
      ["a/b", one("a.png"), 400, /^dataset_name:/],
      ["..", one("a.png"), 400, /^dataset_name:/],
      ["a".repeat(21), one("a.png"), 400, /^dataset_name: must be at most 20/],
      ["", one("a.png"), 400, /^dataset_name:/],
    ];
    for (const [name, content, status, message] of cases) {
      const res = await post(name, content);
      expect(res.status, JSON.stringify([name, content]).slice(0, 200)).toBe(status);
      expect(res.body.message, JSON.stringify([name, content]).slice(0, 200)).toMatch(message);
    }
    // Exactly the limit is fine.
    const forty = await post("forty", Array.from({ length: 40 }, (_, i) => ({ filename: `f${i}.jpg`, type: "image" })));
    expect(forty.status).toBe(201);
    expect(Object.keys(forty.body.data.s3PresignUrl)).toHaveLength(40);
    // A body creator other than the caller is refused.
    const other = await rest(base, "POST", "/datasets", { key: admin, body: { dataset_name: "ok2", content: one("a.png"), creator: "someone" } });
    expect(other.status).toBe(403);
    const rows: Array<{ n: number }> = await stack.runtime.db.query(`SELECT count(*)::int AS n FROM datasets`);
    expect(rows[0]!.n).toBe(2);
  });

  it("keeps other users' datasets out of reach", async () => {
    await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Trainer", permissions: ["train:create", "train:list"] } });
    await rest(base, "POST", "/users", { key: admin, body: { username: "trainer", password: "trainer-pass", roles: ["Trainer"] } });
    const key = (await gql(base, `mutation { createApiKey(input: { name: "t", username: "trainer" }) { apiKey } }`, {}, { key: admin })).body.data.createApiKey.apiKey;
    expect((await rest(base, "GET", "/datasets", { key })).body.data.datasets).toEqual([]);
    expect((await rest(base, "GET", "/datasets/faces_v1", { key })).status).toBe(404);
    expect((await rest(base, "PUT", "/datasets/faces_v1", { key, body: { status: "Disabled" } })).status).toBe(404);
    expect((await rest(base, "DELETE", "/datasets", { key, body: { dataset_name_list: ["faces_v1"] } })).status).toBe(404);
    const g = await gql(base, `mutation { deleteDatasets(names: ["faces_v1"]) }`, {}, { key });
    expect(g.body.errors?.[0]?.extensions?.code).toBe("NOT_FOUND");

    // The trainer's own dataset: visible to them, not to others; admin (train:all) sees it.
    const mine = await gql(base, `mutation { createDataset(input: { name: "mine", files: [{ filename: "a.png", type: "image" }], params: { description: "d" } }) { dataset { name status creator } uploads { filename key url } } }`, {}, { key });
    expect(mine.body.errors).toBeUndefined();
    expect(mine.body.data.createDataset.dataset).toEqual({ name: "mine", status: "Initialed", creator: "trainer" });
    expect(mine.body.data.createDataset.uploads[0]).toMatchObject({ filename: "a.png", key: "dataset/mine/a.png" });
    expect((await rest(base, "GET", "/datasets", { key })).body.data.datasets.map((d: any) => d.datasetName)).toEqual(["mine"]);
    expect((await rest(base, "GET", "/datasets/mine", { key: admin })).status).toBe(200);

    // A user without train:create cannot create.
    await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Viewer", permissions: ["train:list"] } });
    await rest(base, "POST", "/users", { key: admin, body: { username: "viewer", password: "viewer-pass", roles: ["Viewer"] } });
    const viewerKey = (await gql(base, `mutation { createApiKey(input: { name: "v", username: "viewer" }) { apiKey } }`, {}, { key: admin })).body.data.createApiKey.apiKey;
    const refused = await rest(base, "POST", "/datasets", { key: viewerKey, body: { dataset_name: "nope", content: [{ filename: "a.png", name: "a.png", type: "image" }] } });
    expect(refused.status).toBe(403);
    expect(refused.body.message).toMatch(/train:create/);
  });

  it("deletes every object and the rows, all or none", async () => {
    const none = await rest(base, "DELETE", "/datasets", { key: admin, body: { dataset_name_list: ["faces_v1", "nosuch"] } });
    expect(none.status).toBe(404);
    expect(await stack.runtime.storage.head("dataset/faces_v1/img0.png")).toBeDefined();
    expect((await rest(base, "DELETE", "/datasets", { key: admin, body: { dataset_name_list: Array.from({ length: 11 }, (_, i) => `d${i}`) } })).status).toBe(400);

    const del = await rest(base, "DELETE", "/datasets", { key: admin, body: { dataset_name_list: ["faces_v1", "forty"] } });
    expect(del.status).toBe(204);
    for (const f of files) expect(await stack.runtime.storage.head(`dataset/faces_v1/${f}`), f).toBeUndefined();
    expect((await rest(base, "GET", "/datasets/faces_v1", { key: admin })).status).toBe(404);
    const items: Array<{ n: number }> = await stack.runtime.db.query(`SELECT count(*)::int AS n FROM dataset_items`);
    expect(items[0]!.n).toBe(1); // the trainer's "mine"
    // The name is free again.
    const again = await rest(base, "POST", "/datasets", { key: admin, body: { dataset_name: "faces_v1", content: [{ filename: "a.png", name: "a.png", type: "image", params: {} }], params: {} } });
    expect(again.status).toBe(201);
  });
});
