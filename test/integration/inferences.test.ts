import { createSign, generateKeyPairSync } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PNG } from "pngjs";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { snsStringToSign, type SnsMessage } from "../../src/adapters/sns/sns-verifier.js";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";
import { untilRead } from "../helpers/until.js";
import { collectEvents } from "../helpers/subscription.js";

const PAYLOADS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/webui-payloads");

let stack: TestStack;
let base: string;
let admin: string;
let bobKey: string;
let endpoint: string;
const MODEL = "v1-5-pruned-emaonly.safetensors";
const TOPIC = "arn:aws:sns:us-east-1:000000000000:sd-notification-success";

async function activeCheckpoint(key: string, type: string, name: string): Promise<string> {
  const created = await rest(base, "POST", "/checkpoints", { key, body: { checkpoint_type: type, filenames: [{ filename: name, parts_number: 1 }] } });
  expect(created.status).toBe(201);
  const put = await fetch(created.body.data.s3PresignUrl[name][0], { method: "PUT", body: Buffer.from("weights") });
  const etag = put.headers.get("etag")!;
  const done = await rest(base, "PUT", `/checkpoints/${created.body.data.checkpoint.id}`, { key, body: { status: "Active", multi_parts_tags: { [name]: [etag] } } });
  expect(done.status).toBe(200);
  return created.body.data.checkpoint.id as string;
}

async function deployEndpoint(name: string, roles?: string[]): Promise<string> {
  const res = await rest(base, "POST", "/endpoints", { key: admin, body: { endpoint_name: name, instance_type: "ml.g5.xlarge", initial_instance_count: 1, autoscaling_enabled: false, ...(roles ? { assign_to_roles: roles } : {}) } });
  expect(res.status).toBe(202);
  const full = res.body.data.endpoint_name as string;
  await untilRead(() => rest(base, "GET", `/endpoints`, { key: admin }), (r) => r.body.data.endpoints.some((e: any) => e.endpoint_name === full && e.endpoint_status === "InService"), `${full} InService`);
  return full;
}

const finished = (id: string, key = admin) =>
  untilRead(() => rest(base, "GET", `/inferences/${id}`, { key }), (r) => ["succeed", "failed", "cancelled"].includes(r.body.data?.status), `inference ${id} to finish`);

beforeAll(async () => {
  stack = await startTestStack({ worker: true, env: { SNS_SUCCESS_TOPIC_ARN: TOPIC } });
  base = stack.baseUrl;
  admin = stack.adminKey;
  await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Painter", permissions: ["inference:create", "checkpoint:create"] } });
  await rest(base, "POST", "/users", { key: admin, body: { username: "bob", password: "correct horse battery", roles: ["Painter"] } });
  bobKey = (await gql(base, `mutation { createApiKey(input: { name: "bob", username: "bob" }) { apiKey } }`, {}, { key: admin })).body.data.createApiKey.apiKey;
  await activeCheckpoint(admin, "Stable-diffusion", MODEL);
  endpoint = await deployEndpoint("infer", ["IT Operator", "Painter"]);
}, 60_000);
afterAll(async () => stack?.close());

describe("inference through REST", () => {
  it("runs upstream's two-step flow with the WebUI extension's txt2img parameters to downloadable PNGs", async () => {
    const created = await rest(base, "POST", "/inferences", {
      key: admin,
      body: { task_type: "txt2img", inference_type: "Async", models: { "Stable-diffusion": [MODEL], VAE: ["Automatic"] }, filters: { createAt: 1700000000.5, creator: "sd-webui" }, sagemaker_endpoint_name: endpoint },
    });
    expect(created.status).toBe(201);
    const inf = created.body.data.inference;
    expect(inf).toMatchObject({ type: "txt2img", api_params_s3_location: `s3://diffgate-test/txt2img/infer_v2/${inf.id}/api_param.json`, models: [{ name: [MODEL], type: "Stable-diffusion" }] });

    const early = await rest(base, "PUT", `/inferences/${inf.id}/start`, { key: admin });
    expect(early.status).toBe(400);
    expect(early.body.message).toMatch(/api_param\.json/);

    const params = await readFile(path.join(PAYLOADS, "txt2img_api_param.json"), "utf8");
    expect((await fetch(inf.api_params_s3_upload_url, { method: "PUT", body: params })).status).toBe(200);
    const started = await rest(base, "PUT", `/inferences/${inf.id}/start`, { key: admin });
    expect(started.status).toBe(202);
    expect(started.body.data.inference).toMatchObject({ inference_id: inf.id, status: "inprogress", endpoint_name: endpoint });

    const done = await finished(inf.id);
    const job = done.body.data;
    expect(job).toMatchObject({ InferenceJobId: inf.id, status: "succeed", state: "SUCCEEDED", taskType: "txt2img", image_names: ["image_0.png"], endpoint_name: endpoint });
    expect(job.img_presigned_urls).toHaveLength(1);
    const png = PNG.sync.read(Buffer.from(await (await fetch(job.img_presigned_urls[0])).arrayBuffer()));
    expect([png.width, png.height]).toEqual([512, 512]);
    const paramFile = await (await fetch(job.output_presigned_urls[0])).json();
    expect(paramFile).toMatchObject({ inference_id: inf.id, endpont_name: endpoint });
    expect(JSON.parse(paramFile.info).infotexts[0]).toContain("aws logo");
    // Callbacks are hints: the last ones may arrive after the output was collected.
    expect(job.progress.total_steps).toBe(20);
    expect(job.progress.step).toBeGreaterThan(0);

    const events = await stack.runtime.events.readAfter(inf.id, 0);
    const types = events.map((e) => e.type);
    expect(types[0]).toBe("created");
    expect(types.slice(1, 3)).toEqual(["queued", "dispatched"]);
    expect(types.filter((t) => t === "progress").length).toBeGreaterThan(1);
    // The first accepted callback moved it DISPATCHED → RUNNING, once; the result was collected from RUNNING.
    expect(types.filter((t) => t === "running")).toHaveLength(1);
    const running = events.find((e) => e.type === "running")!;
    expect(running.data).toMatchObject({ status: "RUNNING", previous: "DISPATCHED" });
    expect(types.indexOf("running")).toBeGreaterThan(types.indexOf("dispatched"));
    expect(types[types.indexOf("running") + 1]).toBe("progress");
    expect(events.at(-1)!.data).toMatchObject({ status: "SUCCEEDED", previous: "RUNNING" });
    expect(types.at(-1)).toBe("succeeded");
    expect(events.at(-1)!.terminal).toBe(true);
    expect(events.find((e) => e.type === "queued")!.data).toMatchObject({ position: 1 });

    const listed = await rest(base, "GET", "/inferences?status=succeed&limit=1", { key: admin });
    expect(listed.body.data.inferences.map((i: any) => i.InferenceJobId)).toContain(inf.id);
    // Starting again does not invoke again.
    expect((await rest(base, "PUT", `/inferences/${inf.id}/start`, { key: admin })).status).toBe(202);
    const invocations = stack.emulator.invocations.list().filter((i) => i.inferenceId === inf.id);
    expect(invocations).toHaveLength(1);
    expect(invocations[0]!.progress.posted).toBeGreaterThan(0);
    // A retried dispatch (a worker that died after the invocation was recorded) invokes nothing again.
    await stack.runtime.inferences.dispatch(inf.id);
    expect(stack.emulator.invocations.list().filter((i) => i.inferenceId === inf.id)).toHaveLength(1);

    const del = await rest(base, "DELETE", "/inferences", { key: admin, body: { inference_id_list: [inf.id] } });
    expect(del.status).toBe(204);
    expect((await rest(base, "GET", `/inferences/${inf.id}`, { key: admin })).status).toBe(404);
    expect((await fetch(job.img_presigned_urls[0])).status).toBe(404);
  });

  it("runs the seed's one-shot body, and replays or refuses a repeated Idempotency-Key", async () => {
    const body = { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "a red fox", steps: 4, width: 64, height: 64, models: { "Stable-diffusion": [MODEL] } };
    const created = await rest(base, "POST", "/inferences", { key: admin, body, headers: { "idempotency-key": "fox-1" } });
    expect(created.status).toBe(202);
    expect(created.body.data).toMatchObject({ status: "inprogress", endpoint_name: endpoint });
    const again = await rest(base, "POST", "/inferences", { key: admin, body, headers: { "idempotency-key": "fox-1" } });
    expect(again.body.data.inference_id).toBe(created.body.data.inference_id);
    const other = await rest(base, "POST", "/inferences", { key: admin, body: { ...body, prompt: "a blue fox" }, headers: { "idempotency-key": "fox-1" } });
    expect(other.status).toBe(409);
    const done = await finished(created.body.data.inference_id);
    expect(done.body.data.status).toBe("succeed");
  });

  it("refuses bad input, naming the field", async () => {
    const ok = { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "x", models: { "Stable-diffusion": [MODEL] } };
    const cases: Array<[Record<string, unknown>, number, RegExp]> = [
      [{ ...ok, task_type: "paint" }, 400, /task_type/],
      [{ ...ok, models: { "Stable-diffusion": ["missing.safetensors"] } }, 400, /checkpoint with name missing\.safetensors, type Stable-diffusion is not found/],
      [{ ...ok, sagemaker_endpoint_name: "esd-async-nope" }, 400, /not found/],
      [{ ...ok, width: 500 }, 400, /parameters\.width/],
      [{ ...ok, steps: 0 }, 400, /parameters\.steps/],
    ];
    for (const [body, status, message] of cases) {
      const res = await rest(base, "POST", "/inferences", { key: admin, body });
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(res.body.message).toMatch(message);
    }
    const broken = await rest(base, "POST", "/inferences", { key: admin, body: { ...ok, task_type: "img2img", init_images: ["not base64 !!"] } });
    expect(broken.status).toBe(400);
    expect(broken.body.message).toMatch(/parameters\.init_images\.0/);
  });

  it("keeps other users' endpoints, checkpoints and jobs apart", async () => {
    const adminOnly = await deployEndpoint("private", ["IT Operator"]);
    const foreignEndpoint = await rest(base, "POST", "/inferences", { key: bobKey, body: { sagemaker_endpoint_name: adminOnly, task_type: "txt2img", prompt: "x" } });
    expect(foreignEndpoint.status).toBe(400);
    expect(foreignEndpoint.body.message).toMatch(/not found/);
    const foreignModel = await rest(base, "POST", "/inferences", { key: bobKey, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "x", models: { "Stable-diffusion": [MODEL] } } });
    expect(foreignModel.status).toBe(400);
    expect(foreignModel.body.message).toMatch(/is not found/);
    // Bob's own checkpoint works; admins see his job, he does not see theirs.
    await activeCheckpoint(bobKey, "Stable-diffusion", "bob.safetensors");
    const mine = await rest(base, "POST", "/inferences", { key: bobKey, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "x", steps: 2, width: 64, height: 64, models: { "Stable-diffusion": ["bob.safetensors"] } } });
    expect(mine.status).toBe(202);
    const listed = await rest(base, "GET", "/inferences", { key: bobKey });
    expect(listed.body.data.inferences.every((i: any) => i.creator === "bob")).toBe(true);
    expect((await finished(mine.body.data.inference_id, bobKey)).body.data.status).toBe("succeed");
    // A deleted endpoint takes no new jobs.
    await rest(base, "DELETE", "/endpoints", { key: admin, body: { endpoint_name_list: [adminOnly] } });
    const deleted = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: adminOnly, task_type: "txt2img", prompt: "x" } });
    expect([400, 409]).toContain(deleted.status);
  });

  it("cancels a created and a dispatched job, and says when there is nothing to cancel", async () => {
    const created = await rest(base, "POST", "/inferences", { key: admin, body: { task_type: "txt2img", models: {}, sagemaker_endpoint_name: endpoint } });
    const id = created.body.data.inference.id;
    const cancel = await rest(base, "PUT", `/inferences/${id}/cancel`, { key: admin });
    expect(cancel.body.data).toMatchObject({ cancelled: true, inference: { status: "cancelled" } });
    expect(cancel.body.message).toMatch(/before it was sent/);
    const twice = await rest(base, "PUT", `/inferences/${id}/cancel`, { key: admin });
    expect(twice.body.data.cancelled).toBe(false);
    expect(twice.body.message).toMatch(/already finished/);

    const slow = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "slow", steps: 150, width: 64, height: 64 } });
    const slowId = slow.body.data.inference_id;
    await untilRead(() => rest(base, "GET", `/inferences/${slowId}`, { key: admin }), (r) => ["DISPATCHED", "RUNNING"].includes(r.body.data.state), "dispatch");
    const cancelled = await rest(base, "PUT", `/inferences/${slowId}/cancel`, { key: admin });
    expect(cancelled.body.data.cancelled).toBe(true);
    expect(cancelled.body.message).toMatch(/compute may still be spent/);
    const events = await stack.runtime.events.readAfter(slowId, 0);
    expect(events.at(-1)).toMatchObject({ type: "cancelled", terminal: true });
    expect((await rest(base, "PUT", `/inferences/00000000-0000-4000-8000-000000000000/cancel`, { key: admin })).status).toBe(404);
  });

  it("shows a job RUNNING from its first progress callback (REST: inprogress), and cancels it from there", async () => {
    const res = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "running", steps: 150, width: 64, height: 64 } });
    const id = res.body.data.inference_id;
    const seen = await untilRead(() => rest(base, "GET", `/inferences/${id}`, { key: admin }), (r) => r.body.data.state === "RUNNING", "running");
    expect(seen.body.data.status).toBe("inprogress");
    const listed = await rest(base, "GET", "/inferences?status=inprogress", { key: admin });
    expect(listed.body.data.inferences.map((i: any) => i.InferenceJobId)).toContain(id);
    // Later progress keeps it RUNNING, with a single running event.
    await untilRead(() => rest(base, "GET", `/inferences/${id}`, { key: admin }), (r) => r.body.data.progress?.step >= 3, "more progress");
    const mid = await stack.runtime.events.readAfter(id, 0);
    expect(mid.filter((e) => e.type === "running")).toHaveLength(1);
    expect((await rest(base, "GET", `/inferences/${id}`, { key: admin })).body.data.state).toBe("RUNNING");
    const cancelled = await rest(base, "PUT", `/inferences/${id}/cancel`, { key: admin });
    expect(cancelled.body.data).toMatchObject({ cancelled: true, inference: { status: "cancelled" } });
    const events = await stack.runtime.events.readAfter(id, 0);
    expect(events.at(-1)).toMatchObject({ type: "cancelled", terminal: true, data: { previous: "RUNNING" } });
  });

  it("fails with the container's error text when the endpoint writes a failure document", async () => {
    const res = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", steps: 2, width: 64, height: 64 } });
    expect(res.status).toBe(202);
    const done = await finished(res.body.data.inference_id);
    expect(done.body.data.status).toBe("failed");
    expect(done.body.data.error).toBe("ValidationError: prompt: field required");
  });

  it("fails a dispatched job whose output never comes, after its timeout, with a clear reason", async () => {
    const res = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "late", steps: 150, width: 64, height: 64 } });
    const id = res.body.data.inference_id;
    await untilRead(() => rest(base, "GET", `/inferences/${id}`, { key: admin }), (r) => ["DISPATCHED", "RUNNING"].includes(r.body.data.state), "dispatch");
    // As if it had been dispatched long ago (INFERENCE_OUTPUT_TIMEOUT_MS is two hours).
    await stack.runtime.db.query(`UPDATE inferences SET dispatched_at = now() - interval '3 hours' WHERE id = $1`, [id]);
    const done = await finished(id);
    expect(done.body.data.status).toBe("failed");
    expect(done.body.data.error).toMatch(/^no output from endpoint esd-async-infer after 7200 s/);
  });

  it("refuses a 100 MB body with 413 and a clear message, storing nothing", async () => {
    const before = await stack.runtime.db.query(`SELECT count(*)::int AS n FROM inferences`);
    const eventsBefore = await stack.runtime.db.query(`SELECT count(*)::int AS n FROM job_events`);
    // The test stack keeps the default BODY_LIMIT_BYTES (32 MiB).
    const body = JSON.stringify({ sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "x".repeat(100 * 1024 * 1024) });
    const res = await fetch(`${base}/inferences`, { method: "POST", headers: { "content-type": "application/json", "x-api-key": admin }, body });
    expect(res.status).toBe(413);
    const out = (await res.json()) as { message: string };
    expect(out.message).toBe(`the request body is larger than the limit of ${32 * 1024 * 1024} bytes`);
    expect(await stack.runtime.db.query(`SELECT count(*)::int AS n FROM inferences`)).toEqual(before);
    expect(await stack.runtime.db.query(`SELECT count(*)::int AS n FROM job_events`)).toEqual(eventsBefore);
    // The server is fine afterwards.
    expect((await rest(base, "GET", "/inferences", { key: admin })).status).toBe(200);
  });

  it("takes progress callbacks only with the job's token", async () => {
    const created = await rest(base, "POST", "/inferences", { key: admin, body: { task_type: "txt2img", sagemaker_endpoint_name: endpoint } });
    const id = created.body.data.inference.id;
    const call = (auth?: string) => fetch(`${base}/internal/inferences/${id}/progress`, { method: "POST", headers: { "content-type": "application/json", ...(auth ? { authorization: auth } : {}) }, body: JSON.stringify({ step: 1, total_steps: 2 }) });
    expect((await call()).status).toBe(401);
    expect((await call(`Bearer wrong`)).status).toBe(401);
    const withApiKey = await fetch(`${base}/internal/inferences/${id}/progress`, { method: "POST", headers: { "content-type": "application/json", "x-api-key": admin }, body: "{}" });
    expect(withApiKey.status).toBe(401);
  });
});

interface Ev {
  seq: number;
  type: string;
  data: Record<string, any>;
  terminal: boolean;
}

function followInference(id: string, key: string): Promise<Ev[]> {
  return collectEvents<Ev>({ wsUrl: stack.wsUrl, key, query: `subscription($id: ID!) { inferenceEvents(id: $id, after: 0) { seq type data terminal } }`, variables: { id }, field: "inferenceEvents" }).events;
}

describe("the endpoint's gate", () => {
  it("dispatches no more jobs than the endpoint's capacity; the others wait with positions that move up", async () => {
    const ids: string[] = [];
    for (const prompt of ["g1", "g2", "g3", "g4"]) {
      const res = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt, steps: 20, width: 64, height: 64 } });
      expect(res.status).toBe(202);
      ids.push(res.body.data.inference_id);
    }
    let maxInFlight = 0;
    for (;;) {
      const rows = (await stack.runtime.db.query(`SELECT status FROM inferences WHERE id = ANY($1)`, [ids])) as Array<{ status: string }>;
      maxInFlight = Math.max(maxInFlight, rows.filter((r) => r.status === "DISPATCHED" || r.status === "RUNNING").length);
      if (rows.every((r) => ["SUCCEEDED", "FAILED", "CANCELLED"].includes(r.status))) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // One instance × (ENDPOINT_MAX_CONCURRENT_INVOCATIONS 1 + ENDPOINT_QUEUE_AHEAD 1).
    expect(maxInFlight).toBe(2);
    const last = await stack.runtime.events.readAfter(ids[3]!, 0);
    const queued = last.find((e) => e.type === "queued")!.data;
    expect(queued).toMatchObject({ capacity: 2, waitingForCapacity: true, reason: expect.stringContaining("is busy") });
    expect(queued.position).toBeGreaterThanOrEqual(2);
    expect(last.filter((e) => e.type === "position").map((e) => e.data.position)).toContain(1);
    const invokedAt = ids.map((id) => stack.emulator.calls("InvokeEndpointAsync").find((c) => c.body.InferenceId === id));
    expect(invokedAt.every(Boolean)).toBe(true);
  });
});

describe("inference through GraphQL", () => {
  it("runs a one-shot job followed over graphql-ws from creation to the end, with downloadable images", async () => {
    const created = await gql(
      base,
      `mutation($input: CreateInferenceInput!, $key: String) { createInference(input: $input, idempotencyKey: $key) { replayed paramsUploadUrl inference { id status endpointName } } }`,
      { input: { taskType: "txt2img", endpointName: endpoint, models: { "Stable-diffusion": [MODEL] }, parameters: { prompt: "a lighthouse", steps: 10, width: 128, height: 64, batch_size: 2, seed: 7 } }, key: "gql-1" },
      { key: admin },
    );
    expect(created.body.errors).toBeUndefined();
    const { inference, paramsUploadUrl, replayed } = created.body.data.createInference;
    expect({ paramsUploadUrl, replayed, status: inference.status }).toEqual({ paramsUploadUrl: null, replayed: false, status: "QUEUED" });
    const events = await followInference(inference.id, admin);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    const types = events.map((e) => e.type);
    expect(types.slice(0, 3)).toEqual(["created", "queued", "dispatched"]);
    expect(types.at(-1)).toBe("succeeded");
    const progress = events.filter((e) => e.type === "progress");
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.map((p) => p.data.step)).toEqual([...progress.map((p) => p.data.step)].sort((a, b) => a - b));
    const withPreview = progress.find((p) => p.data.previewUrl);
    expect(withPreview).toBeDefined();
    const preview = PNG.sync.read(Buffer.from(await (await fetch(withPreview!.data.previewUrl)).arrayBuffer()));
    expect(Math.max(preview.width, preview.height)).toBeLessThanOrEqual(128);
    const last = events.at(-1)!;
    expect(last.terminal).toBe(true);
    expect(last.data.imageUrls).toHaveLength(2);
    for (const url of last.data.imageUrls) {
      const png = PNG.sync.read(Buffer.from(await (await fetch(url)).arrayBuffer()));
      expect([png.width, png.height]).toEqual([128, 64]);
    }
    const read = await gql(base, `query($id: ID!) { inference(id: $id) { status imageUrls paramsFileUrl imageKeys } inferences(first: 1) { edges { node { id } } pageInfo { hasNextPage endCursor } } }`, { id: inference.id }, { key: admin });
    expect(read.body.data.inference).toMatchObject({ status: "SUCCEEDED", imageKeys: [`out/${inference.id}/result/image_0.png`, `out/${inference.id}/result/image_1.png`] });
    expect(read.body.data.inferences.edges[0].node.id).toBe(inference.id);
    const next = await gql(base, `query($after: String) { inferences(first: 1, after: $after) { edges { node { id } } } }`, { after: read.body.data.inferences.pageInfo.endCursor }, { key: admin });
    expect(next.body.data.inferences.edges[0].node.id).not.toBe(inference.id);
    const again = await gql(base, `mutation($input: CreateInferenceInput!) { createInference(input: $input, idempotencyKey: "gql-1") { replayed } }`, { input: { taskType: "txt2img", endpointName: endpoint, parameters: { prompt: "other" } } }, { key: admin });
    expect(again.body.errors?.[0]?.extensions?.code).toBe("CONFLICT");
    const cancel = await gql(base, `mutation($id: ID!) { cancelInference(id: $id) { cancelled message } }`, { id: inference.id }, { key: admin });
    expect(cancel.body.data.cancelInference.cancelled).toBe(false);
  });
});

interface MyEv extends Ev {
  cursor: number;
  inferenceId: string;
}

/** Follows myInferenceEvents until `done` says so. */
function followMine(key: string, after: number, done: (seen: MyEv[]) => boolean): Promise<MyEv[]> {
  return collectEvents<MyEv>({ wsUrl: stack.wsUrl, key, query: `subscription($after: Int) { myInferenceEvents(after: $after) { cursor inferenceId seq type data terminal } }`, variables: { after }, field: "myInferenceEvents", done, timeoutMs: 20_000 }).events;
}

describe("myInferenceEvents", () => {
  it("streams every event of the caller's own jobs in order, interleaved, without gaps, and resumes from a cursor", async () => {
    await rest(base, "POST", "/users", { key: admin, body: { username: "carol", password: "correct horse battery", roles: ["Painter"] } });
    const carol = (await gql(base, `mutation { createApiKey(input: { name: "carol", username: "carol" }) { apiKey } }`, {}, { key: admin })).body.data.createApiKey.apiKey;
    const terminalsOf = (seen: MyEv[]) => seen.filter((e) => e.terminal).length;
    const live = followMine(carol, 0, (seen) => terminalsOf(seen) === 2);
    await new Promise((r) => setTimeout(r, 300)); // subscribed before the jobs exist: what follows is live
    const job = (prompt: string, key: string) => rest(base, "POST", "/inferences", { key, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt, steps: 10, width: 64, height: 64 } });
    const [a, b, other] = await Promise.all([job("first", carol), job("second", carol), job("bob's", bobKey)]);
    const ids = [a.body.data.inference_id, b.body.data.inference_id];
    const seen = await live;
    // One stream: cursors 1..n; each job's events are its own stream's, in order, complete.
    expect(seen.map((e) => e.cursor)).toEqual(seen.map((_, i) => i + 1));
    expect(new Set(seen.map((e) => e.inferenceId))).toEqual(new Set(ids));
    expect(seen.some((e) => e.inferenceId === other.body.data.inference_id)).toBe(false);
    for (const id of ids) {
      const mine = seen.filter((e) => e.inferenceId === id);
      const stored = await stack.runtime.events.readAfter(id, 0);
      expect(mine.map((e) => [e.seq, e.type, e.terminal])).toEqual(stored.map((e) => [e.seq, e.type, e.terminal]));
      expect(mine.map((e) => e.type)).toEqual(expect.arrayContaining(["created", "queued", "dispatched", "running", "succeeded"]));
    }
    // Interleaved: the second job began before the first ended.
    const firstEnd = seen.findIndex((e) => e.terminal);
    const otherStart = seen.findIndex((e) => e.inferenceId !== seen[firstEnd]!.inferenceId);
    expect(otherStart).toBeLessThan(firstEnd);
    expect(seen.find((e) => e.type === "succeeded")!.data.imageUrls).toHaveLength(1);

    // Resume from a cursor in the middle: the rest of the replay, then a new job live, no gaps or duplicates.
    const cut = Math.floor(seen.length / 2);
    const resumed = followMine(carol, cut, (s) => terminalsOf(s) >= 2 && s.some((e) => e.terminal && !ids.includes(e.inferenceId)));
    const c = await job("third", carol);
    const after = await resumed;
    expect(after.map((e) => e.cursor)).toEqual(after.map((_, i) => cut + 1 + i));
    expect(after.slice(0, seen.length - cut).map((e) => [e.inferenceId, e.seq])).toEqual(seen.slice(cut).map((e) => [e.inferenceId, e.seq]));
    const third = after.filter((e) => e.inferenceId === c.body.data.inference_id);
    expect(third.map((e) => e.seq)).toEqual(third.map((_, i) => i + 1));
    expect(third.at(-1)).toMatchObject({ type: "succeeded", terminal: true });

    const beyond = await new Promise<string>((resolve) => {
      const client = createClient({ url: stack.wsUrl, webSocketImpl: WebSocket, connectionParams: { "x-api-key": carol }, retryAttempts: 0 });
      client.subscribe({ query: `subscription { myInferenceEvents(after: 100000) { cursor } }` }, {
        next: (m) => {
          void client.dispose();
          resolve(JSON.stringify(m.errors ?? m));
        },
        error: (e) => {
          void client.dispose();
          resolve(JSON.stringify(e));
        },
        complete: () => resolve("complete"),
      });
    });
    expect(beyond).toMatch(/beyond your inferences' last event/);
  });
});

describe("endpoint deletion", () => {
  it("fails the jobs still queued on a deleted endpoint with a clear reason", async () => {
    const doomed = await deployEndpoint("doomed");
    // Two-step jobs stay CREATED until started; start one and delete the endpoint before the worker dispatches others.
    const created = await rest(base, "POST", "/inferences", { key: admin, body: { task_type: "txt2img", sagemaker_endpoint_name: doomed } });
    const id = created.body.data.inference.id;
    await rest(base, "DELETE", "/endpoints", { key: admin, body: { endpoint_name_list: [doomed] } });
    const job = await rest(base, "GET", `/inferences/${id}`, { key: admin });
    expect(job.body.data).toMatchObject({ status: "failed", error: `endpoint ${doomed} was deleted before the job was dispatched` });
  });
});

describe("SageMaker notifications through SNS", () => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const confirmed: string[] = [];
  const signed = (m: Omit<SnsMessage, "Signature" | "SignatureVersion" | "SigningCertURL">, over: Partial<SnsMessage> = {}): SnsMessage => {
    const full = { SignatureVersion: "2", SigningCertURL: "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem", Signature: "", ...m, ...over } as SnsMessage;
    full.Signature = createSign("RSA-SHA256").update(snsStringToSign(full)).sign(privateKey, "base64");
    return full;
  };
  const post = (body: unknown) => rest(base, "POST", "/internal/sagemaker-notifications", { rawBody: JSON.stringify(body), headers: { "content-type": "text/plain; charset=UTF-8" } });

  beforeAll(() => {
    stack.runtime.sns.setFetchers(
      async () => publicKey.export({ type: "spki", format: "pem" }).toString(),
      async (url) => {
        confirmed.push(url);
        return "<ConfirmSubscriptionResponse/>";
      },
    );
  });

  it("confirms subscriptions and refuses unsigned, foreign or tampered messages without an API key", async () => {
    const subscribeUrl = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=x&Token=abc";
    const confirmation = signed({ Type: "SubscriptionConfirmation", MessageId: "m1", TopicArn: TOPIC, Message: "You have chosen to subscribe", Timestamp: new Date().toISOString(), Token: "abc", SubscribeURL: subscribeUrl });
    const ok = await post(confirmation);
    expect(ok.status).toBe(200);
    expect(confirmed).toEqual([subscribeUrl]);
    expect((await post({ ...confirmation, Message: "tampered" })).status).toBe(403);
    expect((await post(signed({ Type: "SubscriptionConfirmation", MessageId: "m2", TopicArn: "arn:aws:sns:us-east-1:000000000000:other", Message: "x", Timestamp: "t", Token: "a", SubscribeURL: subscribeUrl }))).status).toBe(403);
    expect((await post(signed({ Type: "SubscriptionConfirmation", MessageId: "m3", TopicArn: TOPIC, Message: "x", Timestamp: "t", Token: "a", SubscribeURL: "https://evil.example/confirm" }))).status).toBe(403);
    expect((await post(signed({ Type: "Notification", MessageId: "m4", TopicArn: TOPIC, Message: "{}", Timestamp: "t" }, { SigningCertURL: "https://evil.example/cert.pem" }))).status).toBe(403);
    expect(confirmed).toHaveLength(1);
  });

  it("handles a (duplicated) success notification once", async () => {
    const res = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt: "sns", steps: 2, width: 64, height: 64 } });
    const id = res.body.data.inference_id;
    const done = await finished(id);
    expect(done.body.data.status).toBe("succeed");
    const before = (await stack.runtime.events.readAfter(id, 0)).length;
    const message = JSON.stringify({ awsRegion: "us-east-1", eventTime: new Date().toISOString(), invocationStatus: "Completed", inferenceId: id, eventName: "InferenceResult", responseParameters: { outputLocation: done.body.data.output_path } });
    for (const n of [1, 2]) {
      const notified = await post(signed({ Type: "Notification", MessageId: `n-${n}`, TopicArn: TOPIC, Message: message, Timestamp: new Date().toISOString() }));
      expect(notified.status).toBe(200);
      expect(notified.body.data).toMatchObject({ inference_id: id, handled: true });
    }
    expect((await stack.runtime.events.readAfter(id, 0)).length).toBe(before);
    expect((await rest(base, "GET", `/inferences/${id}`, { key: admin })).body.data.image_names).toEqual(["image_0.png"]);
  });
});

describe("model creation without a utility endpoint", () => {
  it("is refused with a 409 saying what to configure, and the model stays Initial", async () => {
    const checkpointId = await activeCheckpoint(admin, "Stable-diffusion", "utility-src.safetensors");
    const created = await rest(base, "POST", "/models", { key: admin, body: { model_type: "Stable-diffusion", name: "nowhere", filenames: [], checkpoint_id: checkpointId, params: { create_model_params: { new_model_name: "nowhere" } } } });
    expect(created.status).toBe(201);
    const id = created.body.data.job.id as string;
    const started = await rest(base, "PUT", `/models/${id}`, { key: admin, body: { status: "Creating", multi_parts_tags: {} } });
    expect(started.status).toBe(409);
    expect(started.body.message).toMatch(/no utility endpoint is configured: set MODEL_UTILITY_ENDPOINT/);
    expect((await rest(base, "GET", `/models/${id}`, { key: admin })).body.data.status).toBe("Initial");
  });
});
