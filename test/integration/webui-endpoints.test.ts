import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { PNG } from "pngjs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Queue } from "bullmq";
import { EndpointEntity } from "../../src/adapters/db/entities/endpoint.entity.js";
import { createRedisConnection } from "../../src/adapters/redis-connection.js";
import { TEST_REDIS_URL } from "../helpers/test-database.js";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";
import { startWebUiDouble, type WebUiDouble } from "../helpers/webui-double.js";
import { until } from "../helpers/until.js";
import { collectEvents } from "../helpers/subscription.js";

/**
 * Self-hosted WebUI endpoints against the WebUI double: registration and health, jobs with live
 * progress and previews, one job at a time with queue positions, cancel that interrupts only its
 * own job, a server dying mid-job and coming back, and the job timeout.
 */

let stack: TestStack;
let base: string;
let admin: string;
let gpu: WebUiDouble;
let endpoint: string;
const AUTH = { username: "painter", password: "s3cret-api-auth" };
const MODELS = ["v1-5-pruned-emaonly.safetensors", "dreamshaper_8.safetensors"];
const JOB_TIMEOUT_MS = 4000;

const job = async (id: string) => (await rest(base, "GET", `/inferences/${id}`, { key: admin })).body.data;
const finished = (id: string) => until(`inference ${id} to finish`, async () => {
  const j = await job(id);
  return ["succeed", "failed", "cancelled"].includes(j?.status) && j;
});
const endpointRow = async (name: string) => (await rest(base, "GET", "/endpoints", { key: admin })).body.data.endpoints.find((e: any) => e.endpoint_name === name);

async function submit(body: Record<string, unknown>, target = endpoint): Promise<string> {
  const res = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: target, task_type: "txt2img", ...body } });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  return res.body.data.inference_id as string;
}

interface Ev {
  cursor: number;
  inferenceId: string;
  seq: number;
  type: string;
  data: Record<string, any>;
  terminal: boolean;
}

/** Subscribes to myInferenceEvents (before anything is created) and collects until `done`. */
function followMine(done: (seen: Ev[]) => boolean): { events: Promise<Ev[]>; ready: Promise<void> } {
  return collectEvents<Ev>({ wsUrl: stack.wsUrl, key: admin, query: `subscription { myInferenceEvents(after: 0) { cursor inferenceId seq type data terminal } }`, field: "myInferenceEvents", done });
}

beforeAll(async () => {
  gpu = await startWebUiDouble({ stepMs: 40, previewEvery: 2, models: MODELS, auth: AUTH });
  stack = await startTestStack({
    worker: true,
    env: { WEBUI_HEALTH_INTERVAL_MS: "1000", WEBUI_PROGRESS_INTERVAL_MS: "60", WEBUI_JOB_TIMEOUT_MS: String(JOB_TIMEOUT_MS), DISPATCH_RECHECK_MS: "300", INFERENCE_PROGRESS_PREVIEW_EVERY: "2" },
  });
  base = stack.baseUrl;
  admin = stack.adminKey;
  const res = await rest(base, "POST", "/endpoints/webui", { key: admin, body: { name: "gpu-box", base_url: `${gpu.url}/`, ...AUTH } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  endpoint = res.body.data.endpoint_name;
}, 60_000);
afterAll(async () => {
  await stack?.close();
  await gpu?.close();
});

describe("registering a WebUI server", () => {
  it("checks its health at once, lists its models and never returns the credentials", async () => {
    const e = await endpointRow(endpoint);
    expect(e).toMatchObject({ endpoint_name: "webui-gpu-box", provider: "webui", endpoint_status: "InService", base_url: gpu.url, has_credentials: true, current_instance_count: "1" });
    expect(e.server_models).toEqual(expect.arrayContaining([expect.stringMatching(/^v1-5-pruned-emaonly\.safetensors \[[0-9a-f]{10}\]$/)]));
    const all = JSON.stringify((await rest(base, "GET", "/endpoints", { key: admin })).body);
    const graph = JSON.stringify((await gql(base, `{ endpoints { name provider baseUrl hasCredentials serverModels status } }`, {}, { key: admin })).body);
    for (const text of [all, graph]) expect(text).not.toContain(AUTH.password);
    const row = await stack.runtime.db.getRepository(EndpointEntity).findOneByOrFail({ name: endpoint });
    expect(row.credentialsSealed).toMatch(/^v1\./);
    expect(row.credentialsSealed).not.toContain(AUTH.password);
    // The health check authenticated as the server's --api-auth asks.
    const check = gpu.requests.find((r) => r.path === "/sdapi/v1/sd-models")!;
    expect(check.authorization).toBe(`Basic ${Buffer.from(`${AUTH.username}:${AUTH.password}`).toString("base64")}`);
  });

  it("records a server that is down or refuses the credentials as Failed, with the reason", async () => {
    const closed = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const { port } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const down = await rest(base, "POST", "/endpoints/webui", { key: admin, body: { name: "nobody", base_url: `http://127.0.0.1:${closed}` } });
    expect(down.status).toBe(201);
    expect(down.body.data).toMatchObject({ endpoint_status: "Failed", error: expect.stringContaining("did not answer (ECONNREFUSED)") });
    const wrong = await rest(base, "POST", "/endpoints/webui", { key: admin, body: { name: "wrong-pass", base_url: gpu.url, username: "painter", password: "nope" } });
    expect(wrong.body.data).toMatchObject({ endpoint_status: "Failed", error: expect.stringContaining("refused the credentials (401)") });
    // A job for a server that never was in service is refused.
    const refused = await rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: "webui-nobody", task_type: "txt2img", prompt: "x" } });
    expect(refused.status).toBe(409);
  });

  it("records a server whose answer never ends as Failed at once, without reading it into memory", async () => {
    // Not a WebUI server: it streams forever (1 MiB chunks) to whatever asks.
    let sent = 0;
    const endless = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      const pump = () => {
        while (res.write(chunk)) sent += chunk.length;
      };
      res.on("drain", pump);
      pump();
    });
    await new Promise<void>((resolve) => endless.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(endless.address() as net.AddressInfo).port}`;
      const res = await rest(base, "POST", "/endpoints/webui", { key: admin, body: { name: "endless", base_url: url } });
      expect(res.status).toBe(201);
      expect(res.body.data).toMatchObject({ endpoint_status: "Failed", error: expect.stringContaining("larger than 16777216 bytes") });
      // It stopped reading soon after the limit (a few chunks in flight), not at the health check's deadline.
      expect(sent).toBeLessThan(64 * 1024 * 1024);
    } finally {
      endless.closeAllConnections();
      await new Promise<void>((resolve) => endless.close(() => resolve()));
    }
  });

  it("refuses bad registrations with a 4xx naming the field, storing nothing", async () => {
    const cases: Array<[Record<string, unknown>, number, RegExp]> = [
      [{ name: "x", base_url: "ftp://gpu:21" }, 400, /base_url: must be an http\(s\) URL/],
      [{ name: "x", base_url: "http://u:p@gpu:7860" }, 400, /base_url: must not carry credentials/],
      [{ name: "x", base_url: "http://169.254.169.254" }, 400, /base_url: .*linkLocal/],
      [{ name: "x", base_url: gpu.url, username: "only-user" }, 400, /password: give both/],
      [{ name: "bad name!", base_url: gpu.url }, 400, /name: must be 1-20/],
      [{ name: "x", base_url: gpu.url, extra: 1 }, 400, /extra/],
      [{ name: "gpu-box", base_url: gpu.url }, 409, /already exists/],
    ];
    for (const [body, status, message] of cases) {
      const res = await rest(base, "POST", "/endpoints/webui", { key: admin, body });
      expect(res.status, JSON.stringify(body)).toBe(status);
      expect(res.body.message).toMatch(message);
    }
    expect(await stack.runtime.db.getRepository(EndpointEntity).countBy({ name: "webui-x" })).toBe(0);
    const gqlBad = await gql(base, `mutation { registerWebUiEndpoint(input: { name: "y", baseUrl: "gopher://a" }) { name } }`, {}, { key: admin });
    expect(gqlBad.body.errors?.[0]?.extensions).toMatchObject({ code: "BAD_INPUT", field: "baseUrl" });
  });

  it("refuses jobs the server cannot run: unknown checkpoints, other model types", async () => {
    const bad = async (body: Record<string, unknown>) => rest(base, "POST", "/inferences", { key: admin, body: { sagemaker_endpoint_name: endpoint, prompt: "x", ...body } });
    expect((await bad({ task_type: "txt2img", models: { "Stable-diffusion": ["missing.safetensors"] } })).body.message).toMatch(/models: checkpoint missing\.safetensors is not offered by webui-gpu-box/);
    expect((await bad({ task_type: "txt2img", models: { Lora: ["x"] } })).body.message).toMatch(/models\.Lora: a WebUI server uses its own Lora files/);
  });
});

describe("jobs on a WebUI server", () => {
  it("runs a job followed over graphql-ws: rising steps, a preview, and the server's own images", async () => {
    const follow = followMine((seen) => seen.some((e) => e.terminal));
    await follow.ready;
    const created = await gql(
      base,
      `mutation($input: CreateInferenceInput!) { createInference(input: $input) { inference { id status } } }`,
      { input: { taskType: "txt2img", endpointName: endpoint, models: { "Stable-diffusion": ["dreamshaper_8"], VAE: ["Automatic"] }, parameters: { prompt: "a red fox", steps: 12, width: 96, height: 64, seed: 42, batch_size: 2, override_settings: { CLIP_stop_at_last_layers: 2 } } } },
      { key: admin },
    );
    expect(created.body.errors).toBeUndefined();
    const id = created.body.data.createInference.inference.id;
    const events = (await follow.events).filter((e) => e.inferenceId === id);
    const types = events.map((e) => e.type);
    expect(types.slice(0, 3)).toEqual(["created", "queued", "dispatched"]);
    expect(types).toContain("running");
    expect(types.at(-1)).toBe("succeeded");
    const steps = events.filter((e) => e.type === "progress").map((e) => e.data.step as number);
    expect(steps.length).toBeGreaterThan(2);
    expect(steps).toEqual([...new Set(steps)].sort((a, b) => a - b));
    expect(events.find((e) => e.type === "progress")!.data.totalSteps).toBe(12);
    const withPreview = events.filter((e) => e.type === "progress" && e.data.previewUrl);
    expect(withPreview.length).toBeGreaterThan(0);
    const preview = PNG.sync.read(Buffer.from(await (await fetch(withPreview[0]!.data.previewUrl)).arrayBuffer()));
    expect(Math.max(preview.width, preview.height)).toBeLessThanOrEqual(128);

    // What was sent: the job id as force_task_id, the checkpoint per request, the options untouched.
    const sent = gpu.requests.find((r) => r.path === "/sdapi/v1/txt2img" && (r.body as any).force_task_id === id)!.body as Record<string, any>;
    expect(sent).toMatchObject({ prompt: "a red fox", steps: 12, seed: 42, override_settings_restore_afterwards: true, override_settings: { CLIP_stop_at_last_layers: 2, sd_model_checkpoint: expect.stringMatching(/^dreamshaper_8\.safetensors \[/) } });
    expect(gpu.optionWrites).toEqual([]);

    // The stored images are the server's: the same request straight to the server draws the same pixels.
    const direct = await fetch(`${gpu.url}/sdapi/v1/txt2img`, { method: "POST", headers: { "content-type": "application/json", authorization: `Basic ${Buffer.from(`${AUTH.username}:${AUTH.password}`).toString("base64")}` }, body: JSON.stringify(sent) });
    const expected = ((await direct.json()) as { images: string[] }).images;
    const urls = events.at(-1)!.data.imageUrls as string[];
    expect(urls).toHaveLength(2);
    for (const [n, url] of urls.entries()) {
      const stored = PNG.sync.read(Buffer.from(await (await fetch(url)).arrayBuffer()));
      const theirs = PNG.sync.read(Buffer.from(expected[n]!, "base64"));
      expect([stored.width, stored.height]).toEqual([96, 64]);
      expect(stored.data.equals(theirs.data)).toBe(true);
    }
    const rest1 = await job(id);
    expect(rest1).toMatchObject({ status: "succeed", image_names: ["image_0.png", "image_1.png"] });
  });

  it("runs the WebUI extension's two-step flow with its real txt2img parameters unchanged", async () => {
    const created = await rest(base, "POST", "/inferences", {
      key: admin,
      body: { task_type: "txt2img", inference_type: "Async", models: { "Stable-diffusion": ["v1-5-pruned-emaonly.safetensors"], VAE: ["Automatic"] }, filters: { createAt: 1700000000.5, creator: "sd-webui" }, sagemaker_endpoint_name: endpoint },
    });
    expect(created.status).toBe(201);
    const inf = created.body.data.inference;
    const params = await readFile(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/webui-payloads/txt2img_api_param.json"), "utf8");
    expect((await fetch(inf.api_params_s3_upload_url, { method: "PUT", body: params })).status).toBe(200);
    expect((await rest(base, "PUT", `/inferences/${inf.id}/start`, { key: admin })).status).toBe(202);
    const done = await finished(inf.id);
    expect(done).toMatchObject({ status: "succeed", image_names: ["image_0.png"] });
    const sent = gpu.requests.find((r) => r.path === "/sdapi/v1/txt2img" && (r.body as any).force_task_id === inf.id)!.body as Record<string, any>;
    expect(sent.override_settings.sd_model_checkpoint).toMatch(/^v1-5-pruned-emaonly\.safetensors \[/);
    expect(sent.override_settings.sd_vae).toBeUndefined();
    expect(sent.prompt).toContain("aws logo");
  });

  it("runs img2img on /sdapi/v1/img2img with the init image as given", async () => {
    const init = new PNG({ width: 8, height: 8 });
    init.data.fill(200);
    const image = `data:image/png;base64,${PNG.sync.write(init).toString("base64")}`;
    const id = await submit({ task_type: "img2img", prompt: "repaint", steps: 4, width: 64, height: 64, denoising_strength: 0.6, init_images: [image] });
    expect((await finished(id)).status).toBe("succeed");
    const sent = gpu.requests.find((r) => r.path === "/sdapi/v1/img2img" && (r.body as any).force_task_id === id)!.body as Record<string, any>;
    expect(sent.init_images).toEqual([image]);
    expect(sent.denoising_strength).toBe(0.6);
  });

  it("runs the extras tasks on the server's own extras API, and says so when rembg's extension is missing", async () => {
    const fixture = (name: string) => readFile(path.resolve(path.dirname(fileURLToPath(import.meta.url)), `../fixtures/webui-payloads/${name}`), "utf8").then((t) => JSON.parse(t) as Record<string, unknown>);
    const single = await fixture("extra-single-image-api-params.json");
    const one = await submit({ ...single, task_type: "extra-single-image" });
    expect(await finished(one)).toMatchObject({ status: "succeed", image_names: ["image.png"] });
    const sentOne = gpu.requests.find((r) => r.path === "/sdapi/v1/extra-single-image")!.body as Record<string, unknown>;
    expect(sentOne).toEqual(single); // as given: no task id, no overrides
    const stored = PNG.sync.read(Buffer.from(await (await fetch((await job(one)).img_presigned_urls[0])).arrayBuffer()));
    expect([stored.width, stored.height]).toEqual([128, 128]); // resize_mode 0 × upscaling_resize 2 in the double

    const batch = await submit({ task_type: "extra-batch-images", upscaling_resize: 1, imageList: [{ data: single.image, name: "a.jpg" }, { data: single.image, name: "b.jpg" }] });
    expect(await finished(batch)).toMatchObject({ status: "succeed", image_names: ["image_0.png", "image_1.png"] });

    const rembg = await submit({ ...(await fixture("rembg-api-params.json")), task_type: "rembg" });
    expect(await finished(rembg)).toMatchObject({ status: "failed", error: expect.stringMatching(/refused the job \(404\): Not Found/) });
  });

  it("runs one job at a time per server; the others wait with positions that move up", async () => {
    const ids: string[] = [];
    for (const prompt of ["first", "second", "third"]) ids.push(await submit({ prompt, steps: 8, width: 64, height: 64 }));
    for (const id of ids) expect((await finished(id)).status).toBe("succeed");
    const all = await Promise.all(ids.map((id) => stack.runtime.events.readAfter(id, 0)));
    const queued = all.map((evs) => evs.find((e) => e.type === "queued")!.data);
    expect(queued[2]).toMatchObject({ position: 2, capacity: 1, waitingForCapacity: true });
    // The third moved up from 2 to 1 while it waited.
    expect(all[2]!.filter((e) => e.type === "position").map((e) => e.data.position)).toContain(1);
    // Never two at once: each dispatch comes after the previous job ended.
    const at = (evs: typeof all[0], type: string) => evs.find((e) => e.type === type)!.createdAt.getTime();
    for (let n = 1; n < 3; n++) expect(at(all[n]!, "dispatched")).toBeGreaterThanOrEqual(at(all[n - 1]!, "succeeded"));
    const onServer = gpu.requests.filter((r) => r.path === "/sdapi/v1/txt2img" && ids.includes((r.body as any).force_task_id));
    expect(onServer.map((r) => (r.body as any).force_task_id)).toEqual(ids);
  });

  it("cancels a running job by interrupting the server, and a queued one without touching the server", async () => {
    const running = await submit({ prompt: "long", steps: 60, width: 64, height: 64 });
    const waiting = await submit({ prompt: "waiting", steps: 5, width: 64, height: 64 });
    await until("the first job running", async () => gpu.runningTaskId() === running && (await job(running)).state === "RUNNING");
    const before = gpu.interrupts.length;
    const c1 = await rest(base, "PUT", `/inferences/${waiting}/cancel`, { key: admin });
    expect(c1.status).toBe(200);
    expect(gpu.interrupts.length).toBe(before);
    const c2 = await gql(base, `mutation($id: ID!) { cancelInference(id: $id) { cancelled message } }`, { id: running }, { key: admin });
    expect(c2.body.data.cancelInference).toMatchObject({ cancelled: true, message: expect.stringContaining("was interrupted") });
    expect(gpu.interrupts.slice(before)).toEqual([{ at: expect.any(Number), runningTaskId: running }]);
    expect((await job(running)).state).toBe("CANCELLED");
    expect((await job(waiting)).state).toBe("CANCELLED");
    // The partial answer the interrupted server returned is discarded.
    await until("the server to be idle", async () => gpu.runningTaskId() === null);
    await new Promise((r) => setTimeout(r, 300));
    expect((await job(running)).image_names ?? []).toEqual([]);
  });

  it("never interrupts another client's work on the server when a job waiting behind it is cancelled", async () => {
    const auth = `Basic ${Buffer.from(`${AUTH.username}:${AUTH.password}`).toString("base64")}`;
    const theirs = fetch(`${gpu.url}/sdapi/v1/txt2img`, { method: "POST", headers: { "content-type": "application/json", authorization: auth }, body: JSON.stringify({ prompt: "someone else's", steps: 40, width: 64, height: 64, force_task_id: "task(theirs)" }) });
    await until("their task running", async () => gpu.runningTaskId() === "task(theirs)");
    const ours = await submit({ prompt: "ours", steps: 5, width: 64, height: 64 });
    await until("ours sent to the server", async () => gpu.requests.some((r) => r.path === "/sdapi/v1/txt2img" && (r.body as any).force_task_id === ours));
    const before = gpu.interrupts.length;
    const c = await rest(base, "PUT", `/inferences/${ours}/cancel`, { key: admin });
    expect(c.status).toBe(200);
    expect(c.body.message).toMatch(/had not started it yet/);
    expect(gpu.interrupts.length).toBe(before);
    const answer = (await (await theirs).json()) as { info: string };
    expect(JSON.parse(answer.info).interrupted).toBe(false);
    expect((await job(ours)).state).toBe("CANCELLED");
  });

  it("fails a job whose server dies mid-job, takes the server out of service, and back when it returns", async () => {
    gpu.crashDuringNextJob(3);
    const id = await submit({ prompt: "doomed", steps: 20, width: 64, height: 64 });
    const done = await finished(id);
    expect(done).toMatchObject({ status: "failed", error: expect.stringMatching(/WebUI server webui-gpu-box stopped answering mid-job/) });
    await until("the endpoint out of service", async () => (await endpointRow(endpoint)).endpoint_status === "Failed");
    // Jobs sent meanwhile wait for the server instead of failing.
    const waiting = await submit({ prompt: "patient", steps: 4, width: 64, height: 64 });
    await new Promise((r) => setTimeout(r, 500));
    const w = await job(waiting);
    expect(w.state).toBe("QUEUED");
    const standing = (await stack.runtime.events.readAfter(waiting, 0)).filter((e) => e.type === "queued" || e.type === "position").at(-1)!.data;
    expect(standing.reason).toMatch(/out of service/);
    await gpu.restart();
    await until("the endpoint back in service", async () => (await endpointRow(endpoint)).endpoint_status === "InService");
    expect((await finished(waiting)).status).toBe("succeed");
    const endpointEvents = await gql(base, `query { endpoint(name: "${endpoint}") { id } }`, {}, { key: admin });
    const statuses = (await stack.runtime.events.readAfter(endpointEvents.body.data.endpoint.id, 0)).filter((e) => e.type === "status").map((e) => e.data.status);
    expect(statuses.slice(-2)).toEqual(["Failed", "InService"]);
  });

  it("interrupts and fails a job that runs past its timeout", async () => {
    const id = await submit({ prompt: "endless", steps: 150, width: 64, height: 64 });
    const done = await finished(id);
    expect(done).toMatchObject({ status: "failed", error: expect.stringMatching(new RegExp(`ran longer than ${JOB_TIMEOUT_MS / 1000} s .*was interrupted`)) });
    expect(gpu.interrupts.at(-1)!.runningTaskId).toBe(id);
  });
});

describe("with WEBUI_RETRY_ON_SERVER_FAILURE", () => {
  it("runs a job once more when its server comes back after dying under it", async () => {
    const box = await startWebUiDouble({ stepMs: 30 });
    const retrying = await startTestStack({ worker: true, env: { WEBUI_RETRY_ON_SERVER_FAILURE: "true", WEBUI_HEALTH_INTERVAL_MS: "1000", WEBUI_PROGRESS_INTERVAL_MS: "60", DISPATCH_RECHECK_MS: "300" } });
    try {
      const reg = await rest(retrying.baseUrl, "POST", "/endpoints/webui", { key: retrying.adminKey, body: { name: "flaky", base_url: box.url } });
      expect(reg.body.data.endpoint_status).toBe("InService");
      box.crashDuringNextJob(2);
      const res = await rest(retrying.baseUrl, "POST", "/inferences", { key: retrying.adminKey, body: { sagemaker_endpoint_name: "webui-flaky", task_type: "txt2img", prompt: "again", steps: 6, width: 64, height: 64 } });
      const id = res.body.data.inference_id as string;
      await until("the server to be lost", async () => (await retrying.runtime.events.readAfter(id, 0)).some((e) => e.type === "server-lost"));
      await new Promise((r) => setTimeout(r, 500));
      await box.restart();
      const done = await until("the job to finish", async () => {
        const j = (await rest(retrying.baseUrl, "GET", `/inferences/${id}`, { key: retrying.adminKey })).body.data;
        return ["succeed", "failed", "cancelled"].includes(j?.status) && j;
      });
      expect(done).toMatchObject({ status: "succeed", image_names: ["image_0.png"] });
      const types = (await retrying.runtime.events.readAfter(id, 0)).map((e) => e.type);
      expect(types.filter((t) => t === "server-lost")).toHaveLength(1);
      expect(types.filter((t) => t === "redispatched")).toHaveLength(1);
      expect(box.requests.filter((r) => r.path === "/sdapi/v1/txt2img" && (r.body as { force_task_id?: string }).force_task_id === id)).toHaveLength(2);
    } finally {
      await retrying.close();
      await box.close();
    }
  }, 60_000);
});

describe("with WORKER_CONCURRENCY=1", () => {
  it("runs jobs on several WebUI servers at once, and the other work goes on while they generate", async () => {
    const boxes = await Promise.all([0, 1, 2].map(() => startWebUiDouble({ stepMs: 40 })));
    const narrow = await startTestStack({ worker: true, env: { WORKER_CONCURRENCY: "1", WEBUI_WORKER_CONCURRENCY: "4", WEBUI_PROGRESS_INTERVAL_MS: "60", DISPATCH_RECHECK_MS: "300" } });
    const call = (method: string, route: string, body?: unknown) => rest(narrow.baseUrl, method, route, { key: narrow.adminKey, ...(body ? { body } : {}) });
    try {
      for (const [i, box] of boxes.entries()) expect((await call("POST", "/endpoints/webui", { name: `box${i}`, base_url: box.url })).status).toBe(201);
      const ids: string[] = [];
      for (const i of [0, 1, 2]) {
        const res = await call("POST", "/inferences", { sagemaker_endpoint_name: `webui-box${i}`, task_type: "txt2img", prompt: `box ${i}`, steps: 150, width: 64, height: 64 });
        expect(res.status, res.text).toBe(202);
        ids.push(res.body.data.inference_id as string);
      }
      // Every server generates at the same moment: each run holds a slot of the WebUI queue's worker, not the work queue's one.
      await until("all three servers to be generating at once", async () => boxes.every((b, i) => b.runningTaskId() === ids[i]));
      // Meanwhile the work queue's single slot is free: a system check runs to the end.
      const check = await gql(narrow.baseUrl, `mutation { runSystemCheck { id } }`, {}, { key: narrow.adminKey });
      const checkId = check.body.data!.runSystemCheck.id as string;
      const ran = await until("the system check to finish", async () => {
        const s = (await gql(narrow.baseUrl, `query($id: ID!) { systemCheck(id: $id) { status } }`, { id: checkId }, { key: narrow.adminKey })).body.data?.systemCheck.status;
        return ["SUCCEEDED", "FAILED"].includes(s) && s;
      });
      expect(ran).toBeTruthy();
      expect(boxes.filter((b, i) => b.runningTaskId() === ids[i]).length).toBeGreaterThan(0); // it finished while they still ran
      for (const id of ids) {
        const done = await until(`inference ${id}`, async () => {
          const j = (await call("GET", `/inferences/${id}`)).body.data;
          return ["succeed", "failed", "cancelled"].includes(j?.status) && j;
        });
        expect(done.status).toBe("succeed");
      }
    } finally {
      await narrow.close();
      await Promise.all(boxes.map((b) => b.close()));
    }
  }, 60_000);
});

describe("live previews in the other formats servers send", () => {
  for (const format of ["jpeg", "webp"] as const) {
    it(`stores a ${format} live preview (Forge sends jpeg by default) as a PNG of at most 128 px`, async () => {
      const box = await startWebUiDouble({ stepMs: 40, previewEvery: 2, previewFormat: format, previewSide: 256 });
      try {
        const reg = await rest(base, "POST", "/endpoints/webui", { key: admin, body: { name: `previews-${format}`, base_url: box.url } });
        expect(reg.status, reg.text).toBe(201);
        const id = await submit({ prompt: `${format} previews`, steps: 20, width: 256, height: 256 }, `webui-previews-${format}`);
        expect((await finished(id)).status).toBe("succeed");
        const previews = (await stack.runtime.events.readAfter(id, 0)).filter((e) => e.type === "progress" && typeof e.data.previewKey === "string");
        expect(previews.length).toBeGreaterThan(0);
        const url = (await job(id)).preview_url as string;
        const bytes = Buffer.from(await (await fetch(url)).arrayBuffer());
        const png = PNG.sync.read(bytes);
        expect([png.width, png.height]).toEqual([128, 128]);
      } finally {
        await box.close();
      }
    }, 30_000);
  }
});

describe("a job whose queue entry was lost", () => {
  it("gets it back from the reconcile job and runs to the end", async () => {
    const box = await startWebUiDouble({ stepMs: 10 });
    // No worker yet: the job waits in Redis, where it is then lost.
    const lossy = await startTestStack({ env: { RECONCILE_INTERVAL_MS: "1000", DISPATCH_RECHECK_MS: "300" } });
    const redis = createRedisConnection(TEST_REDIS_URL, "diffgate-test-lost-job");
    const work = new Queue("work", { connection: redis, prefix: lossy.childEnv.QUEUE_PREFIX });
    const call = (method: string, route: string, body?: unknown) => rest(lossy.baseUrl, method, route, { key: lossy.adminKey, ...(body ? { body } : {}) });
    try {
      expect((await call("POST", "/endpoints/webui", { name: "lossy", base_url: box.url })).status).toBe(201);
      const res = await call("POST", "/inferences", { sagemaker_endpoint_name: "webui-lossy", task_type: "txt2img", prompt: "lost and found", steps: 4, width: 64, height: 64 });
      expect(res.status, res.text).toBe(202);
      const id = res.body.data.inference_id as string;
      const entry = await work.getJob(`inference-dispatch-${id}`);
      expect(entry).toBeDefined();
      await entry!.remove();
      expect(await work.getJob(`inference-dispatch-${id}`)).toBeUndefined();

      await lossy.runtime.startWorker();
      const done = await until("the job to finish", async () => {
        const j = (await call("GET", `/inferences/${id}`)).body.data;
        return ["succeed", "failed", "cancelled"].includes(j?.status) && j;
      });
      expect(done.status).toBe("succeed");
      expect(box.requests.filter((r) => r.path === "/sdapi/v1/txt2img")).toHaveLength(1);
    } finally {
      await work.close();
      redis.disconnect();
      await lossy.close();
      await box.close();
    }
  }, 30_000);
});
