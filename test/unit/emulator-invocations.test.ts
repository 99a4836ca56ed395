import { readFile, mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PNG } from "pngjs";
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { CreateEndpointCommand, CreateEndpointConfigCommand, CreateModelCommand, DeleteEndpointCommand, DescribeEndpointCommand, SageMakerClient, UpdateEndpointWeightsAndCapacitiesCommand } from "@aws-sdk/client-sagemaker";
import { InvokeEndpointAsyncCommand, SageMakerRuntimeClient, type InvokeEndpointAsyncCommandInput } from "@aws-sdk/client-sagemaker-runtime";
import { startEmbeddedS3, type RunningS3 } from "../../src/local/embedded-s3.js";
import { parseWebUiJson } from "../../src/domain/webui-parameters.js";
import { imageInfo, type InvocationRecord } from "../../src/local/emulator-invocations.js";
import { startSageMakerEmulator, type SageMakerEmulator } from "../../src/local/sagemaker-emulator.js";
import { refusal } from "../helpers/aws-refusal.js";

const PAYLOADS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/webui-payloads");
const BUCKET = "diffgate-test";
const ROLE = "arn:aws:iam::000000000000:role/Exec";
const credentials = { accessKeyId: "emulator", secretAccessKey: "emulator" };

let dir: string;
let s3server: RunningS3;
let emulator: SageMakerEmulator;
let sm: SageMakerClient;
let runtime: SageMakerRuntimeClient;
let s3: S3Client;
/** Added to the emulator's clock, to pass request TTLs without waiting. */
let skewMs = 0;
let counter = 0;

const payloadText = (name: string) => readFile(path.join(PAYLOADS, name), "utf8");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

async function endpointWith(name: string, options: { instances?: number; perInstance?: number; failurePath?: string; async?: boolean } = {}): Promise<void> {
  await sm.send(new CreateModelCommand({ ModelName: `m-${name}`, ExecutionRoleArn: ROLE, PrimaryContainer: { Image: "img:1" } }));
  await sm.send(
    new CreateEndpointConfigCommand({
      EndpointConfigName: `c-${name}`,
      ProductionVariants: [{ VariantName: "prod", ModelName: `m-${name}`, InitialInstanceCount: options.instances ?? 1, InstanceType: "ml.g5.xlarge" }],
      ...(options.async === false
        ? {}
        : {
            AsyncInferenceConfig: {
              OutputConfig: { S3OutputPath: `s3://${BUCKET}/sagemaker_output/`, ...(options.failurePath ? { S3FailurePath: options.failurePath } : {}) },
              ClientConfig: { MaxConcurrentInvocationsPerInstance: options.perInstance ?? 1 },
            },
          }),
    }),
  );
  await sm.send(new CreateEndpointCommand({ EndpointName: name, EndpointConfigName: `c-${name}` }));
  await waitFor(async () => (await sm.send(new DescribeEndpointCommand({ EndpointName: name }))).EndpointStatus === "InService", `${name} InService`);
}

async function setInstances(name: string, count: number): Promise<void> {
  await sm.send(new UpdateEndpointWeightsAndCapacitiesCommand({ EndpointName: name, DesiredWeightsAndCapacities: [{ VariantName: "prod", DesiredInstanceCount: count }] }));
  await waitFor(async () => {
    const e = await sm.send(new DescribeEndpointCommand({ EndpointName: name }));
    return e.EndpointStatus === "InService" && e.ProductionVariants?.[0]?.CurrentInstanceCount === count;
  }, `${name} at ${count} instances`);
}

async function put(key: string, body: string): Promise<string> {
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body, ContentType: "application/json" }));
  return `s3://${BUCKET}/${key}`;
}

async function get(uri: string): Promise<string> {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri)!;
  const res = await s3.send(new GetObjectCommand({ Bucket: m[1], Key: m[2] }));
  return res.Body!.transformToString("utf8");
}

async function exists(uri: string): Promise<boolean> {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri)!;
  return s3.send(new HeadObjectCommand({ Bucket: m[1], Key: m[2] })).then(
    () => true,
    () => false,
  );
}

/**
 * Uploads the WebUI parameters (raw text, as clients send them) and the invocation payload the way
 * Diffgate does, then calls InvokeEndpointAsync through the real SDK.
 */
async function invoke(endpoint: string, task: string, paramsText: string, extra: Record<string, unknown> = {}, input: Partial<InvokeEndpointAsyncCommandInput> = {}) {
  const id = `inv-${++counter}`;
  const paramS3 = await put(`${task}/infer_v2/${id}/api_param.json`, paramsText);
  const payload = { task, username: "test", param_s3: paramS3, models: { space_free_size: 40000000000.0, "Stable-diffusion": [{ id: "ck-1", model_name: "v1-5.safetensors", s3: `s3://${BUCKET}/Stable-diffusion/checkpoint/custom/ck-1`, type: "Stable-diffusion" }] }, ...extra };
  const inputLocation = await put(`async-endpoint-inputs/${endpoint}/${id}`, JSON.stringify(payload));
  return runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: endpoint, InputLocation: inputLocation, ContentType: "application/json", Accept: "application/json", InvocationTimeoutSeconds: 3600, ...input }));
}

const settled = (inferenceId: string) => emulator.invocations.settled(inferenceId);

function png(base64: string): PNG {
  const bytes = Buffer.from(base64, "base64");
  expect(bytes.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  return PNG.sync.read(bytes);
}

/** txt2img parameters: the real body with some members replaced (text, so `Infinity` stays as clients send it). */
async function txt2img(overrides: Record<string, string> = {}): Promise<string> {
  let text = await payloadText("txt2img_api_param.json");
  for (const [key, value] of Object.entries(overrides)) {
    const re = new RegExp(`("${key}": )[^,\\n]+`);
    expect(re.test(text), key).toBe(true);
    text = text.replace(re, `$1${value}`);
  }
  return text;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "diffgate-invocations-"));
  s3server = await startEmbeddedS3(dir, BUCKET);
  emulator = await startSageMakerEmulator({
    settings: {
      endpointCreateMs: 30,
      endpointUpdateMs: 30,
      endpointDeleteMs: 30,
      invocationStartMs: 10,
      invocationStepMs: 5,
      s3: { endpoint: s3server.endpoint, region: "us-east-1", credentials: s3server.credentials, forcePathStyle: true },
    },
    now: () => Date.now() + skewMs,
  });
  sm = new SageMakerClient({ region: "us-east-1", endpoint: emulator.url, credentials, maxAttempts: 1 });
  runtime = new SageMakerRuntimeClient({ region: "us-east-1", endpoint: emulator.url, credentials, maxAttempts: 1 });
  s3 = new S3Client({ region: "us-east-1", endpoint: s3server.endpoint, credentials: s3server.credentials, forcePathStyle: true });
  await endpointWith("ep-one");
});

afterAll(async () => {
  sm?.destroy();
  runtime?.destroy();
  s3?.destroy();
  await emulator?.stop();
  await s3server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("InvokeEndpointAsync on the emulator", () => {
  it("runs txt2img with the real WebUI body: batch_size PNG test cards, infotexts, deterministic for a seed", async () => {
    const params = await payloadText("txt2img_api_param_batch_size.json");
    const res = await invoke("ep-one", "txt2img", params, {}, { InferenceId: "job-txt2img-1" });
    expect(res.$metadata.httpStatusCode).toBe(202);
    expect(res.InferenceId).toBe("job-txt2img-1");
    expect(res.OutputLocation).toBe(`s3://${BUCKET}/sagemaker_output/job-txt2img-1.out`);
    expect(res.FailureLocation).toBe(`s3://${BUCKET}/sagemaker_output/job-txt2img-1-error.out`);
    const record = await settled("job-txt2img-1");
    expect(record).toMatchObject({ status: "completed", task: "txt2img", totalSteps: 20 });
    expect(record.error).toBeUndefined();

    const text = await get(res.OutputLocation!);
    // The request echo keeps the client's non-standard literal, as the WebUI's Python json.dumps writes it.
    expect(text).toContain('"s_tmax":Infinity');
    const out = parseWebUiJson(text) as { images: string[]; parameters: Record<string, unknown>; info: string };
    expect(out.images).toHaveLength(4);
    for (const image of out.images) {
      const decoded = png(image);
      expect([decoded.width, decoded.height]).toEqual([512, 512]);
    }
    expect(out.parameters).toMatchObject({ prompt: "aws logo", batch_size: 4, s_tmax: Infinity, alwayson_scripts: expect.any(Object) });
    const info = JSON.parse(out.info) as { infotexts: string[]; all_seeds: number[]; seed: number; width: number; height: number };
    expect(info.all_seeds).toEqual([223104262, 223104263, 223104264, 223104265]);
    expect(info.infotexts).toHaveLength(4);
    expect(info.infotexts[0]).toBe("aws logo\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 223104262, Size: 512x512, Model: emulated");
    expect(info.infotexts[3]).toContain("Seed: 223104265");
    expect(new Set(out.images).size).toBe(4);

    // Same seed and parameters, another job: the same bytes.
    const again = await invoke("ep-one", "txt2img", params);
    expect((await settled(again.InferenceId!)).status).toBe("completed");
    const out2 = parseWebUiJson(await get(again.OutputLocation!)) as { images: string[] };
    expect(out2.images).toEqual(out.images);

    // The invocation is in the request log with the SDK's member names.
    const call = emulator.calls("InvokeEndpointAsync").find((c) => c.body.InferenceId === "job-txt2img-1");
    expect(call?.body).toMatchObject({ EndpointName: "ep-one", ContentType: "application/json", Accept: "application/json", InvocationTimeoutSeconds: "3600" });
    expect(String(call?.body.InputLocation)).toMatch(/^s3:\/\/diffgate-test\/async-endpoint-inputs\/ep-one\//);
    expect(emulator.invocations.stats("ep-one")).toMatchObject({ instances: 1, capacity: 1, completed: 2, failed: 0, queued: 0, running: 0 });
  });

  it("derives seed -1 from the job id, and seeds the batch seed+1, +2", async () => {
    const params = await txt2img({ seed: "-1", batch_size: "2", steps: "3", width: "256", height: "128" });
    const a = await invoke("ep-one", "txt2img", params, {}, { InferenceId: "seed-a" });
    const b = await invoke("ep-one", "txt2img", params, {}, { InferenceId: "seed-b" });
    await Promise.all([settled("seed-a"), settled("seed-b")]);
    const infoA = JSON.parse((parseWebUiJson(await get(a.OutputLocation!)) as { info: string }).info) as { all_seeds: number[] };
    const outB = parseWebUiJson(await get(b.OutputLocation!)) as { info: string; images: string[] };
    const infoB = JSON.parse(outB.info) as { all_seeds: number[] };
    expect(infoA.all_seeds[0]).toBeGreaterThanOrEqual(0);
    expect(infoA.all_seeds[1]).toBe(infoA.all_seeds[0]! + 1);
    expect(infoB.all_seeds[0]).not.toBe(infoA.all_seeds[0]);
    const image = png(outB.images[0]!);
    expect([image.width, image.height]).toEqual([256, 128]);
  });

  it("takes the payload inline as Body, and honours S3OutputPathExtension and Filename", async () => {
    const paramS3 = await put("txt2img/infer_v2/inline/api_param.json", await txt2img({ steps: "2", width: "64", height: "64" }));
    const res = await runtime.send(
      new InvokeEndpointAsyncCommand({ EndpointName: "ep-one", Body: new TextEncoder().encode(JSON.stringify({ task: "txt2img", param_s3: paramS3, models: {} })), ContentType: "application/json", S3OutputPathExtension: "inline", Filename: "result.out", InferenceId: "job-inline" }),
    );
    expect(res.OutputLocation).toBe(`s3://${BUCKET}/sagemaker_output/inline/result.out`);
    expect(res.FailureLocation).toBe(`s3://${BUCKET}/sagemaker_output/inline/job-inline-error.out`);
    expect((await settled("job-inline")).status).toBe("completed");
    expect((parseWebUiJson(await get(res.OutputLocation!)) as { images: string[] }).images).toHaveLength(1);
    const both = await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ep-one", Body: new TextEncoder().encode("{}"), InputLocation: paramS3 })));
    expect(both).toEqual({ name: "ValidationError", status: 400, message: "Body and InputLocation are mutually exclusive. Provide exactly one of them." });
  });

  it("runs img2img with the real WebUI body", async () => {
    const res = await invoke("ep-one", "img2img", await payloadText("img2img_api_param.json"));
    const record = await settled(res.InferenceId!);
    expect(record.error).toBeUndefined();
    // The WebUI samples int(0.75 × 20) + 1 steps for img2img.
    expect(record).toMatchObject({ status: "completed", task: "img2img", totalSteps: 16 });
    const out = parseWebUiJson(await get(res.OutputLocation!)) as { images: string[]; parameters: Record<string, unknown>; info: string };
    expect(out.images).toHaveLength(1);
    const image = png(out.images[0]!);
    expect([image.width, image.height]).toEqual([512, 512]);
    expect(out.parameters).toMatchObject({ prompt: "cat", init_images: null, denoising_strength: 0.75 });
    const info = JSON.parse(out.info) as { infotexts: string[] };
    expect(info.infotexts[0]).toBe("cat\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 690562950, Size: 512x512, Model: emulated, Denoising strength: 0.75");
  });

  it("runs extras and rembg with the real WebUI bodies", async () => {
    const extraText = await payloadText("extra-single-image-api-params.json");
    const input = imageInfo(Buffer.from((JSON.parse(extraText) as { image: string }).image, "base64"))!;
    expect(input.format).toBe("jpeg");
    const extra = await invoke("ep-one", "extra-single-image", extraText, { models: {} });
    const rembgText = await payloadText("rembg-api-params.json");
    const rembgInput = imageInfo(Buffer.from((JSON.parse(rembgText) as { input_image: string }).input_image, "base64"))!;
    const rembg = await invoke("ep-one", "rembg", rembgText, { models: {} });
    const batch = await invoke("ep-one", "extra-batch-images", JSON.stringify({ resize_mode: 1, upscaling_resize_w: 320, upscaling_resize_h: 240, upscaler_1: "R-ESRGAN 4x+", imageList: [{ data: JSON.parse(rembgText).input_image, name: "a.jpg" }, { data: JSON.parse(extraText).image, name: "b.jpg" }] }), { models: {} });
    for (const r of [extra, rembg, batch]) expect((await settled(r.InferenceId!)).status).toBe("completed");

    const extraOut = JSON.parse(await get(extra.OutputLocation!)) as { image: string; html_info: string };
    const upscaled = png(extraOut.image);
    expect([upscaled.width, upscaled.height]).toEqual([input.width * 2, input.height * 2]);
    expect(extraOut.html_info).toContain("Lanczos");
    const rembgOut = JSON.parse(await get(rembg.OutputLocation!)) as Record<string, string>;
    expect(Object.keys(rembgOut)).toEqual(["image"]);
    const cut = png(rembgOut.image!);
    expect([cut.width, cut.height]).toEqual([rembgInput.width, rembgInput.height]);
    const batchOut = JSON.parse(await get(batch.OutputLocation!)) as { images: string[]; html_info: string };
    expect(batchOut.images.map((i) => [png(i).width, png(i).height])).toEqual([
      [320, 240],
      [320, 240],
    ]);
  });

  it("writes a failure document for payloads a WebUI would refuse", async () => {
    await endpointWith("ep-fail", { failurePath: `s3://${BUCKET}/sagemaker_failure` });
    const img2img = JSON.parse(await payloadText("img2img_api_param.json").then((t) => t.replace("Infinity", "1e308"))) as Record<string, unknown>;
    const cases: Array<{ task: string; params: string; error: string; detail: RegExp }> = [
      { task: "txt2img", params: await txt2img({ width: "513" }), error: "ValidationError", detail: /^width: must be a multiple of 8 between 64 and 2048, got 513$/ },
      { task: "txt2img", params: await txt2img({ height: "4096" }), error: "ValidationError", detail: /^height: must be a multiple of 8/ },
      { task: "txt2img", params: await txt2img({ steps: "0" }), error: "ValidationError", detail: /^steps: must be between 1 and 150, got 0$/ },
      { task: "txt2img", params: await txt2img({ steps: "151" }), error: "ValidationError", detail: /^steps: must be between 1 and 150/ },
      { task: "txt2img", params: await txt2img({ cfg_scale: "NaN" }), error: "ValidationError", detail: /^cfg_scale: NaN is not a valid value$/ },
      { task: "txt2img", params: JSON.stringify({ steps: 20, width: 512, height: 512 }), error: "ValidationError", detail: /^prompt: field required$/ },
      { task: "img2img", params: JSON.stringify({ ...img2img, init_images: [] }), error: "ValidationError", detail: /^init_images: img2img needs at least one init image$/ },
      { task: "img2img", params: JSON.stringify({ ...img2img, init_images: ["data:image/png;base64,not*base64"] }), error: "ValidationError", detail: /^init_images\.0: Invalid encoded image: not base64$/ },
      { task: "rembg", params: JSON.stringify({ input_image: Buffer.from("plain text, not an image").toString("base64") }), error: "ValidationError", detail: /^input_image: Invalid encoded image: cannot identify image file$/ },
      { task: "interrogate", params: JSON.stringify({}), error: "UnknownTask", detail: /^Unknown task "interrogate"/ },
      { task: "txt2img", params: "{not json", error: "InvalidInput", detail: /param_s3 at s3:\/\/.* is not JSON/ },
    ];
    const started = await Promise.all(cases.map((c) => invoke("ep-fail", c.task, c.params)));
    for (const [i, res] of started.entries()) {
      const c = cases[i]!;
      expect(res.FailureLocation).toBe(`s3://${BUCKET}/sagemaker_failure/${res.InferenceId}-error.out`);
      const record = await settled(res.InferenceId!);
      expect(record.status, c.task).toBe("failed");
      const doc = JSON.parse(await get(res.FailureLocation!)) as { error: string; detail: string };
      expect(doc.error, JSON.stringify(doc)).toBe(c.error);
      expect(doc.detail).toMatch(c.detail);
      expect(await exists(res.OutputLocation!)).toBe(false);
    }
    expect(emulator.invocations.stats("ep-fail")).toMatchObject({ failed: cases.length, completed: 0 });
  });

  it("refuses requests like SageMaker Runtime", async () => {
    const input = { InputLocation: `s3://${BUCKET}/whatever` };
    expect(await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ghost", ...input })))).toEqual({ name: "ValidationError", status: 400, message: "Endpoint ghost of account 000000000000 not found." });
    await sm.send(new CreateModelCommand({ ModelName: "m-slow", ExecutionRoleArn: ROLE, PrimaryContainer: { Image: "img:1" } }));
    await sm.send(new CreateEndpointConfigCommand({ EndpointConfigName: "c-slow", ProductionVariants: [{ VariantName: "prod", ModelName: "m-slow", InitialInstanceCount: 1, InstanceType: "ml.g5.xlarge" }], AsyncInferenceConfig: { OutputConfig: { S3OutputPath: `s3://${BUCKET}/out/` } } }));
    emulator.state.settings.endpointCreateMs = 60_000;
    await sm.send(new CreateEndpointCommand({ EndpointName: "ep-creating", EndpointConfigName: "c-slow" }));
    emulator.state.settings.endpointCreateMs = 30;
    expect(await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ep-creating", ...input })))).toEqual({ name: "ValidationError", status: 400, message: "Endpoint ep-creating of account 000000000000 not found." });
    expect((await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ep-one" } as never)))).message).toBe("1 validation error detected: Value null at 'inputLocation' failed to satisfy constraint: Member must not be null");
    const ranges = await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ep-one", ...input, InvocationTimeoutSeconds: 0, RequestTTLSeconds: 30 })));
    expect(ranges.message).toBe(
      "2 validation errors detected: Value '0' at 'invocationTimeoutSeconds' failed to satisfy constraint: Member must have value greater than or equal to 1; Value '30' at 'requestTTLSeconds' failed to satisfy constraint: Member must have value greater than or equal to 60",
    );
    expect((await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ep-one", ...input, InvocationTimeoutSeconds: 3601 })))).message).toContain("Member must have value less than or equal to 3600");
    expect((await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ep-one", InputLocation: "/tmp/x" })))).message).toContain("at 'inputLocation' failed to satisfy constraint: Member must satisfy regular expression pattern");
    await endpointWith("ep-realtime", { async: false });
    expect((await refusal(runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: "ep-realtime", ...input })))).message).toMatch(/is not configured for asynchronous inference/);
  });

  it("runs one invocation at a time per instance × MaxConcurrentInvocationsPerInstance", async () => {
    const params = await txt2img({ steps: "20", width: "64", height: "64" });
    const pair = async (endpoint: string): Promise<[InvocationRecord, InvocationRecord]> => {
      const [a, b] = await Promise.all([invoke(endpoint, "txt2img", params), invoke(endpoint, "txt2img", params)]);
      const both = [await settled(a.InferenceId!), await settled(b.InferenceId!)].sort((r, s) => r.startedAt! - s.startedAt!);
      return [both[0]!, both[1]!];
    };
    const [first, second] = await pair("ep-one");
    expect(second.startedAt!).toBeGreaterThanOrEqual(first.finishedAt!);
    expect(emulator.invocations.stats("ep-one").peakRunning).toBe(1);

    await endpointWith("ep-two", { instances: 2 });
    const [x, y] = await pair("ep-two");
    expect(Math.max(x.startedAt!, y.startedAt!)).toBeLessThan(Math.min(x.finishedAt!, y.finishedAt!));
    expect(emulator.invocations.stats("ep-two")).toMatchObject({ instances: 2, capacity: 2, peakRunning: 2, completed: 2 });

    await endpointWith("ep-conc", { instances: 1, perInstance: 2 });
    const [u, v] = await pair("ep-conc");
    expect(Math.max(u.startedAt!, v.startedAt!)).toBeLessThan(Math.min(u.finishedAt!, v.finishedAt!));
    expect(emulator.invocations.stats("ep-conc").capacity).toBe(2);
  });

  it("holds the queue of an endpoint at 0 instances, expires requests past their TTL, and resumes with instances", async () => {
    await endpointWith("ep-zero");
    await setInstances("ep-zero", 0);
    const params = await txt2img({ steps: "2", width: "64", height: "64" });
    const held = await invoke("ep-zero", "txt2img", params);
    const expiring = await invoke("ep-zero", "txt2img", params, {}, { RequestTTLSeconds: 60 });
    await sleep(200);
    expect(emulator.invocations.stats("ep-zero")).toMatchObject({ instances: 0, capacity: 0, queued: 2, running: 0 });
    skewMs += 61_000;
    const expired = await settled(expiring.InferenceId!);
    expect(expired).toMatchObject({ status: "expired", error: "RequestExpired" });
    expect(JSON.parse(await get(expiring.FailureLocation!))).toMatchObject({ error: "RequestExpired" });
    expect(emulator.invocations.get(held.InferenceId!)?.status).toBe("queued");
    await setInstances("ep-zero", 1);
    expect((await settled(held.InferenceId!)).status).toBe("completed");
    expect(emulator.invocations.stats("ep-zero")).toMatchObject({ instances: 1, completed: 1, expired: 1, queued: 0 });

    // Deleting the endpoint drops what still waits, with a failure document.
    await setInstances("ep-zero", 0);
    const dropped = await invoke("ep-zero", "txt2img", params);
    await sm.send(new DeleteEndpointCommand({ EndpointName: "ep-zero" }));
    expect(await settled(dropped.InferenceId!)).toMatchObject({ status: "failed", error: "EndpointDeleted" });
    expect(JSON.parse(await get(dropped.FailureLocation!))).toMatchObject({ error: "EndpointDeleted" });
  });

  it("fails an invocation that outlives its InvocationTimeoutSeconds", async () => {
    // 150 steps × 2 iterations × 5 ms ≈ 1.5 s > 1 s.
    const res = await invoke("ep-one", "txt2img", await txt2img({ steps: "150", n_iter: "2", width: "64", height: "64" }), {}, { InvocationTimeoutSeconds: 1 });
    const record = await settled(res.InferenceId!);
    expect(record).toMatchObject({ status: "failed", error: "InvocationTimeout" });
    expect(record.finishedAt! - record.startedAt!).toBeLessThan(1500);
    expect(JSON.parse(await get(res.FailureLocation!))).toMatchObject({ error: "InvocationTimeout" });
    expect(await exists(res.OutputLocation!)).toBe(false);
  });

  it("posts step progress with previews every N steps to the job's callback, with its bearer token", async () => {
    const received: Array<{ auth: string | undefined; body: Record<string, unknown> }> = [];
    const server: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        received.push({ auth: req.headers.authorization, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown> });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/progress/job-p`;
    try {
      const res = await invoke("ep-one", "txt2img", await txt2img({ steps: "12" }), { progress: { url, token: "tok-secret-1", every: 4 } }, { InferenceId: "job-progress" });
      expect((await settled("job-progress")).status).toBe("completed");
      await waitFor(() => received.length === 12, "12 progress posts");
      expect(received.map((r) => r.body.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
      expect(received.every((r) => r.auth === "Bearer tok-secret-1")).toBe(true);
      expect(received.every((r) => r.body.inference_id === "job-progress" && r.body.total_steps === 12)).toBe(true);
      const etas = received.map((r) => r.body.eta_seconds as number);
      expect(etas).toEqual([...etas].sort((a, b) => b - a));
      expect(etas.at(-1)).toBe(0);
      const withPreview = received.filter((r) => typeof r.body.preview === "string");
      expect(withPreview.map((r) => r.body.step)).toEqual([4, 8, 12]);
      for (const r of withPreview) {
        const preview = png(r.body.preview as string);
        expect(Math.max(preview.width, preview.height)).toBeLessThanOrEqual(128);
      }
      expect(emulator.invocations.get("job-progress")?.progress).toMatchObject({ url, posted: 12, failed: 0 });
      expect(await exists(res.OutputLocation!)).toBe(true);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }

    // A callback that cannot be reached never fails the job.
    const dead = await invoke("ep-one", "txt2img", await txt2img({ steps: "3", width: "64", height: "64" }), { progress: { url, token: "t" } });
    const record = await settled(dead.InferenceId!);
    expect(record.status).toBe("completed");
    await waitFor(() => emulator.invocations.get(dead.InferenceId!)!.progress.failed === 3, "3 failed posts");
  });
});

describe("utility tasks: db-create-model and merge-checkpoint", () => {
  const readText = async (uri: string) => {
    const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri)!;
    return (await (await s3.send(new GetObjectCommand({ Bucket: m[1], Key: m[2] }))).Body!.transformToString("utf8"));
  };
  const invokePayload = async (endpoint: string, payload: Record<string, unknown>) => {
    const id = `util-${++counter}`;
    const inputLocation = await put(`utility-inputs/${id}.json`, JSON.stringify(payload));
    return runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: endpoint, InputLocation: inputLocation, InferenceId: id, ContentType: "application/json" }));
  };

  beforeAll(async () => endpointWith("ep-utils"), 30_000);

  it("creates a model tar from an existing checkpoint, and answers statusCode 500 for a missing one", async () => {
    await put("Stable-diffusion/checkpoint/custom/ck-u/base.safetensors", "weights");
    const job = (s3Output: string, ckpt: string) => ({
      task: "db-create-model",
      param_s3: "",
      db_create_model_payload: JSON.stringify({ s3_output_path: s3Output, s3_input_path: `s3://${BUCKET}/Stable-diffusion/checkpoint/custom/ck-u`, ckpt_names: [ckpt], param: { create_model_params: { new_model_name: "mymodel", ckpt_path: ckpt } }, job_id: "m-1" }),
    });
    const ok = await invokePayload("ep-utils", job(`s3://${BUCKET}/Stable-diffusion/model/mymodel/m-1/output`, "base.safetensors"));
    expect((await settled(ok.InferenceId!)).status).toBe("completed");
    const doc = JSON.parse(await readText(ok.OutputLocation!));
    expect(doc).toMatchObject({ id: "m-1", statusCode: 200, outputLocation: [`s3://${BUCKET}/Stable-diffusion/model/mymodel/m-1/output/mymodel.tar`] });
    expect(await exists(`s3://${BUCKET}/Stable-diffusion/model/mymodel/m-1/output/mymodel.tar`)).toBe(true);

    const missing = await invokePayload("ep-utils", job(`s3://${BUCKET}/Stable-diffusion/model/mymodel/m-2/output`, "nope.safetensors"));
    expect((await settled(missing.InferenceId!)).status).toBe("completed");
    expect(JSON.parse(await readText(missing.OutputLocation!))).toMatchObject({ statusCode: 500, message: expect.stringMatching(/FileNotFoundError/) });

    const bad = await invokePayload("ep-utils", { task: "db-create-model", db_create_model_payload: 42 });
    expect((await settled(bad.InferenceId!)).status).toBe("failed");
    expect(JSON.parse(await readText(bad.FailureLocation!))).toMatchObject({ error: "ValidationError" });
  });

  it("merges checkpoints into a placeholder file, and refuses what the WebUI merger would", async () => {
    await put("Stable-diffusion/checkpoint/custom/ck-a/a.safetensors", "a");
    await put("Stable-diffusion/checkpoint/custom/ck-b/b.safetensors", "b");
    const info = { "Stable-diffusion": [{ model_name: "a.safetensors", s3: `s3://${BUCKET}/Stable-diffusion/checkpoint/custom/ck-a` }, { model_name: "b.safetensors", s3: `s3://${BUCKET}/Stable-diffusion/checkpoint/custom/ck-b` }] };
    const merge = (extra: Record<string, unknown>) => ({
      task: "merge-checkpoint",
      merge_checkpoint_payload: { primary_model_name: "a.safetensors", secondary_model_name: "b.safetensors", teritary_model_name: "", interp_method: "Weighted sum", interp_amount: 0.4, custom_name: "ab", checkpoint_format: "safetensors", merge_model_s3: `s3://${BUCKET}/merge/x/output`, ...extra },
      checkpoint_info: info,
    });
    const ok = await invokePayload("ep-utils", merge({}));
    expect((await settled(ok.InferenceId!)).status).toBe("completed");
    expect(await exists(`s3://${BUCKET}/merge/x/output/ab.safetensors`)).toBe(true);
    const noTertiary = await invokePayload("ep-utils", merge({ interp_method: "Add difference" }));
    expect((await settled(noTertiary.InferenceId!)).status).toBe("failed");
    expect(await readText(noTertiary.FailureLocation!)).toMatch(/requires a tertiary model/);
    const unknown = await invokePayload("ep-utils", merge({ secondary_model_name: "zzz.safetensors" }));
    expect((await settled(unknown.InferenceId!)).status).toBe("failed");
    expect(JSON.parse(await readText(unknown.FailureLocation!))).toMatchObject({ error: "ModelNotFound" });
  });
});
