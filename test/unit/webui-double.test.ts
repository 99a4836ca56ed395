import { PNG } from "pngjs";
import { afterEach, describe, expect, it } from "vitest";
import { startWebUiDouble, type WebUiDouble, type WebUiDoubleOptions } from "../helpers/webui-double.js";

/** Doubles started by a test, closed after it. */
const started: WebUiDouble[] = [];

async function double(options?: WebUiDoubleOptions): Promise<WebUiDouble> {
  const d = await startWebUiDouble(options);
  started.push(d);
  return d;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((d) => d.close()));
});

interface Generation {
  images: string[];
  parameters: Record<string, unknown>;
  info: string;
}

async function call(d: WebUiDouble, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(d.url + path, {
    method,
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

async function txt2img(d: WebUiDouble, body: Record<string, unknown>): Promise<Generation> {
  const { status, json } = await call(d, "POST", "/sdapi/v1/txt2img", body);
  expect(status).toBe(200);
  return json as Generation;
}

function decode(b64: string): PNG {
  return PNG.sync.read(Buffer.from(b64.replace(/^data:image\/png;base64,/, ""), "base64"));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `cond` holds (or fails after `ms`). */
async function until(cond: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await sleep(5);
  }
}

/** The error code under a failed fetch (ECONNREFUSED, UND_ERR_SOCKET, ...). */
async function fetchFailure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause;
    return cause?.code ?? (e as Error).message;
  }
  throw new Error("expected the request to fail");
}

describe("WebUI double", () => {
  it("lists the configured checkpoints like /sdapi/v1/sd-models", async () => {
    const d = await double({ models: ["v1-5-pruned-emaonly.safetensors", "sdxl/juggernaut.ckpt"] });
    const { status, json } = await call(d, "GET", "/sdapi/v1/sd-models");
    expect(status).toBe(200);
    expect(json).toHaveLength(2);
    const [a, b] = json;
    expect(a.hash).toMatch(/^[0-9a-f]{10}$/);
    expect(a.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(a.sha256.startsWith(a.hash)).toBe(true);
    expect(a).toMatchObject({ title: `v1-5-pruned-emaonly.safetensors [${a.hash}]`, model_name: "v1-5-pruned-emaonly", config: null });
    expect(a.filename).toMatch(/\/v1-5-pruned-emaonly\.safetensors$/);
    expect(b).toMatchObject({ title: `sdxl/juggernaut.ckpt [${b.hash}]`, model_name: "sdxl_juggernaut" });
    expect((await call(d, "GET", "/sdapi/v1/options")).json).toEqual({ sd_model_checkpoint: a.title });
  });

  it("generates batch_size × n_iter PNGs of the requested size, deterministic per seed", async () => {
    const d = await double({ stepMs: 2 });
    const body = { prompt: "a red fox", steps: 5, width: 96, height: 64, seed: 1234, batch_size: 2, n_iter: 2, sampler_name: "DPM++ 2M", cfg_scale: 6.5 };
    const first = await txt2img(d, body);
    expect(first.images).toHaveLength(4);
    for (const image of first.images) {
      const png = decode(image);
      expect([png.width, png.height]).toEqual([96, 64]);
    }
    expect(new Set(first.images).size).toBe(4);
    expect(first.parameters).toEqual(body);
    const info = JSON.parse(first.info);
    expect(info).toMatchObject({ seed: 1234, all_seeds: [1234, 1235, 1236, 1237], prompt: "a red fox", width: 96, height: 64, steps: 5, sd_model_name: "v1-5-pruned-emaonly", interrupted: false });
    expect(info.job_timestamp).toMatch(/^\d{14}$/);
    expect(info.infotexts[0]).toContain("Seed: 1234");

    const again = await txt2img(d, body);
    expect(again.images).toEqual(first.images);
    const otherSeed = await txt2img(d, { ...body, seed: 99 });
    expect(otherSeed.images.some((img, i) => img === first.images[i])).toBe(false);
    const otherPrompt = await txt2img(d, { ...body, prompt: "a blue fox" });
    expect(otherPrompt.images[0]).not.toEqual(first.images[0]);
  });

  it("defaults to 512×512 and 20 steps, derives seed -1 from the task id and names the override model", async () => {
    const d = await double({ stepMs: 0, models: ["base.safetensors", "other.safetensors"] });
    const body = { prompt: "p", seed: -1, force_task_id: "task(fixed)", override_settings: { sd_model_checkpoint: "other.safetensors" } };
    const a = await txt2img(d, body);
    const b = await txt2img(d, body);
    const infoA = JSON.parse(a.info);
    expect(infoA).toMatchObject({ width: 512, height: 512, steps: 20, sd_model_name: "other" });
    expect(infoA.seed).toBeGreaterThanOrEqual(0);
    expect(JSON.parse(b.info).seed).toBe(infoA.seed);
    expect(b.images).toEqual(a.images);
    const png = decode(a.images[0]!);
    expect([png.width, png.height]).toEqual([512, 512]);
    expect(d.completedTasks()).toEqual(["task(fixed)", "task(fixed)"]);
    // The override does not change the loaded model.
    expect((await call(d, "GET", "/sdapi/v1/options")).json.sd_model_checkpoint).toMatch(/^base\.safetensors \[/);
    expect(d.optionWrites).toEqual([]);
  });

  it("still produces the real size for large images, as a cheap fill", async () => {
    const d = await double({ stepMs: 0 });
    const { images } = await txt2img(d, { steps: 1, width: 2048, height: 1536, seed: 5 });
    const png = decode(images[0]!);
    expect([png.width, png.height]).toEqual([2048, 1536]);
    expect(Buffer.from(images[0]!, "base64").length).toBeLessThan(64 * 1024);
  });

  it("reports progress mid-run on both progress endpoints, with live previews", async () => {
    const d = await double({ stepMs: 15, previewEvery: 2 });
    expect((await call(d, "GET", "/sdapi/v1/progress")).json).toMatchObject({ progress: 0, state: { job: "" }, current_image: null });

    const generation = txt2img(d, { prompt: "progress", steps: 10, width: 64, height: 64, seed: 1, force_task_id: "task(progress)" });
    const globalSteps: number[] = [];
    const taskProgress: number[] = [];
    const previews: string[] = [];
    let previewId = -1;
    let sawCurrentImage = false;
    let repeatedIdGaveNull = false;
    let done = false;
    void generation.then(() => (done = true));
    while (!done) {
      const g = (await call(d, "GET", "/sdapi/v1/progress?skip_current_image=false")).json;
      if (g.state.job === "txt2img") {
        globalSteps.push(g.state.sampling_step);
        expect(g.state.sampling_steps).toBe(10);
        expect(g.progress).toBeGreaterThan(0);
        if (g.current_image) {
          expect(decode(g.current_image).width).toBe(64);
          sawCurrentImage = true;
        }
      }
      const skipped = (await call(d, "GET", "/sdapi/v1/progress?skip_current_image=true")).json;
      expect(skipped.current_image).toBeNull();

      const t = (await call(d, "POST", "/internal/progress", { id_task: "task(progress)", id_live_preview: previewId, live_preview: true })).json;
      if (t.active) {
        expect(t.queued).toBe(false);
        taskProgress.push(t.progress);
        if (t.live_preview) {
          expect(t.id_live_preview).toBeGreaterThan(previewId);
          previews.push(t.live_preview);
          previewId = t.id_live_preview;
          const same = (await call(d, "POST", "/internal/progress", { id_task: "task(progress)", id_live_preview: previewId, live_preview: true })).json;
          if (same.active && same.id_live_preview === previewId) repeatedIdGaveNull ||= same.live_preview === null;
        }
      }
      await sleep(5);
    }
    await generation;

    expect(new Set(globalSteps.filter((s) => s > 0)).size).toBeGreaterThanOrEqual(2);
    expect(globalSteps.some((s, i) => i > 0 && s > globalSteps[i - 1]!)).toBe(true);
    expect(taskProgress.some((p, i) => i > 0 && p > taskProgress[i - 1]!)).toBe(true);
    expect(sawCurrentImage).toBe(true);
    expect(previews.length).toBeGreaterThanOrEqual(1);
    expect(previews[0]).toMatch(/^data:image\/png;base64,/);
    const preview = decode(previews[0]!);
    expect([preview.width, preview.height]).toEqual([64, 64]);
    expect(repeatedIdGaveNull).toBe(true);

    const after = (await call(d, "POST", "/internal/progress", { id_task: "task(progress)", id_live_preview: -1 })).json;
    expect(after).toMatchObject({ active: false, queued: false, completed: true, progress: null, live_preview: null });
    expect((await call(d, "GET", "/sdapi/v1/progress")).json).toMatchObject({ progress: 0, state: { job: "", job_count: 0 } });
  });

  it("serialises concurrent generations FIFO behind one lock", async () => {
    const d = await double({ stepMs: 10 });
    const order: string[] = [];
    const first = txt2img(d, { steps: 6, width: 32, height: 32, force_task_id: "task(A)" }).then(() => order.push("A"));
    await until(() => d.runningTaskId() === "task(A)");
    const second = txt2img(d, { steps: 3, width: 32, height: 32, force_task_id: "task(B)" }).then(() => order.push("B"));
    await until(() => d.requests.some((r) => r.path === "/sdapi/v1/txt2img" && (r.body as { force_task_id?: string }).force_task_id === "task(B)"));

    const b = (await call(d, "POST", "/internal/progress", { id_task: "task(B)" })).json;
    expect(b).toMatchObject({ active: false, queued: true, completed: false, textinfo: "In queue: 1/1" });
    const a = (await call(d, "POST", "/internal/progress", { id_task: "task(A)" })).json;
    expect(a).toMatchObject({ active: true, queued: false, completed: false });
    expect(d.runningTaskId()).toBe("task(A)");

    await until(() => d.runningTaskId() === "task(B)");
    expect(d.completedTasks()).toEqual(["task(A)"]);
    await Promise.all([first, second]);
    expect(order).toEqual(["A", "B"]);
    expect(d.completedTasks()).toEqual(["task(A)", "task(B)"]);
    expect(d.runningTaskId()).toBeNull();
  });

  it("interrupts the running generation early and records the task it hit", async () => {
    const d = await double({ stepMs: 10 });
    expect((await call(d, "POST", "/sdapi/v1/interrupt")).json).toEqual({});
    expect(d.interrupts).toEqual([{ at: expect.any(Number), runningTaskId: null }]);

    const startedAt = Date.now();
    const generation = txt2img(d, { steps: 200, width: 48, height: 48, batch_size: 2, n_iter: 3, seed: 7, force_task_id: "task(long)" });
    await until(async () => (await call(d, "GET", "/sdapi/v1/progress")).json.state.sampling_step >= 3);
    expect((await call(d, "POST", "/sdapi/v1/interrupt")).json).toEqual({});
    const result = await generation;
    expect(Date.now() - startedAt).toBeLessThan(3000); // all 600 steps would take 6 s

    expect(d.interrupts[1]).toEqual({ at: expect.any(Number), runningTaskId: "task(long)" });
    expect(JSON.parse(result.info)).toMatchObject({ interrupted: true, seed: 7 });
    expect(result.images).toHaveLength(2); // the partial first batch only
    expect([decode(result.images[0]!).width, decode(result.images[0]!).height]).toEqual([48, 48]);
    expect(d.completedTasks()).toEqual(["task(long)"]);
    expect(d.runningTaskId()).toBeNull();
  });

  it("accepts img2img with base64 init images and refuses missing or broken ones with 422", async () => {
    const d = await double({ stepMs: 0 });
    const init = (await txt2img(d, { steps: 1, width: 16, height: 16, seed: 3 })).images[0]!;
    const ok = await call(d, "POST", "/sdapi/v1/img2img", { init_images: [`data:image/png;base64,${init}`], steps: 2, width: 40, height: 24, denoising_strength: 0.5 });
    expect(ok.status).toBe(200);
    expect(ok.json.images).toHaveLength(1);
    expect(decode(ok.json.images[0]).width).toBe(40);
    expect(ok.json.parameters.init_images).toBeNull();
    expect(JSON.parse(ok.json.info).denoising_strength).toBe(0.5);

    const missing = await call(d, "POST", "/sdapi/v1/img2img", { prompt: "x" });
    expect(missing.status).toBe(422);
    expect(missing.json.detail[0]).toMatchObject({ loc: ["body", "init_images"] });
    expect((await call(d, "POST", "/sdapi/v1/img2img", { init_images: [] })).status).toBe(422);
    const broken = await call(d, "POST", "/sdapi/v1/img2img", { init_images: ["not base64 at all!"] });
    expect(broken).toEqual({ status: 422, json: expect.objectContaining({ error: expect.any(String), detail: "Invalid encoded image" }) });
    const notImage = await call(d, "POST", "/sdapi/v1/img2img", { init_images: [Buffer.from("hello world!").toString("base64")] });
    expect(notImage.status).toBe(422);
    expect(d.completedTasks()).toHaveLength(2);
  });

  it("answers unknown routes 404, bad JSON and bad fields 422, and records option writes", async () => {
    const d = await double({ stepMs: 0, models: ["a.safetensors", "b.safetensors"] });
    expect(await call(d, "GET", "/sdapi/v1/nope")).toEqual({ status: 404, json: { detail: "Not Found" } });
    expect((await call(d, "GET", "/sdapi/v1/txt2img")).status).toBe(405);
    const bad = await call(d, "POST", "/sdapi/v1/txt2img", "{not json");
    expect(bad.status).toBe(422);
    expect(Array.isArray(bad.json.detail)).toBe(true);
    expect((await call(d, "POST", "/sdapi/v1/txt2img", { steps: "many" })).status).toBe(422);

    expect((await call(d, "POST", "/sdapi/v1/options", { sd_model_checkpoint: "b.safetensors" })).status).toBe(200);
    expect((await call(d, "GET", "/sdapi/v1/options")).json.sd_model_checkpoint).toMatch(/^b\.safetensors \[/);
    expect((await call(d, "POST", "/sdapi/v1/options", { sd_model_checkpoint: "missing" })).status).toBe(500);
    expect(d.optionWrites).toEqual([{ sd_model_checkpoint: "b.safetensors" }, { sd_model_checkpoint: "missing" }]);
    expect(d.requests.map((r) => `${r.method} ${r.path}`)).toContain("POST /sdapi/v1/options");
  });

  it("requires HTTP basic credentials when auth is configured", async () => {
    const d = await double({ auth: { username: "user", password: "secret" } });
    const none = await call(d, "GET", "/sdapi/v1/sd-models");
    expect(none).toEqual({ status: 401, json: { detail: "Not authenticated" } });
    const wrong = await call(d, "GET", "/sdapi/v1/sd-models", undefined, { authorization: `Basic ${Buffer.from("user:nope").toString("base64")}` });
    expect(wrong.status).toBe(401);
    const right = `Basic ${Buffer.from("user:secret").toString("base64")}`;
    const ok = await call(d, "GET", "/sdapi/v1/sd-models", undefined, { authorization: right });
    expect(ok.status).toBe(200);
    expect(d.requests.map((r) => r.authorization)).toEqual([undefined, `Basic ${Buffer.from("user:nope").toString("base64")}`, right]);
  });

  it("refuses connections after stop() and works again on the same port after restart()", async () => {
    const d = await double({ stepMs: 10 });
    const url = d.url;
    const inFlight = fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify({ steps: 100, width: 8, height: 8 }) });
    await until(() => d.runningTaskId() !== null);
    await d.stop();
    expect(await fetchFailure(inFlight)).toBe("UND_ERR_SOCKET");
    expect(await fetchFailure(fetch(`${url}/sdapi/v1/sd-models`))).toBe("ECONNREFUSED");
    expect(d.runningTaskId()).toBeNull();

    await d.restart();
    expect(d.url).toBe(url);
    expect((await call(d, "GET", "/sdapi/v1/progress")).json.state.job).toBe("");
    expect(d.completedTasks()).toEqual([]);
    const { images } = await txt2img(d, { steps: 2, width: 8, height: 8 });
    expect(images).toHaveLength(1);
  });

  it("crashDuringNextJob: the generation's socket dies mid-job and the server stops listening", async () => {
    const d = await double({ stepMs: 5 });
    d.crashDuringNextJob(3);
    const code = await fetchFailure(fetch(`${d.url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify({ steps: 20, width: 8, height: 8 }) }));
    expect(code).toBe("UND_ERR_SOCKET");
    expect(await fetchFailure(fetch(`${d.url}/sdapi/v1/sd-models`))).toBe("ECONNREFUSED");
    expect(d.completedTasks()).toEqual([]);

    await d.restart();
    expect((await txt2img(d, { steps: 4, width: 8, height: 8 })).images).toHaveLength(1); // the crash was one-shot
  });

  it("stays correct with stepMs 0 without blocking the event loop", async () => {
    const d = await double({ stepMs: 0, previewEvery: 1 });
    const generation = txt2img(d, { steps: 300, width: 16, height: 16, force_task_id: "task(fast)" });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const seen = (await call(d, "POST", "/internal/progress", { id_task: "task(fast)" })).json;
    const result = await generation;
    clearInterval(timer);
    expect(result.images).toHaveLength(1);
    expect(seen.active || seen.completed).toBe(true);
    expect(ticks).toBeGreaterThan(0);
  });
});
