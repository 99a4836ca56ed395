import { createHash, randomUUID } from "node:crypto";
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { parseWebUiJson } from "../domain/webui-parameters.js";
import { AwsError } from "./emulator-operations.js";
import { createEmulatorS3Client, type EmulatorState, type EndpointRecord } from "./emulator-state.js";
import { placeholderSafetensors, tar } from "./emulator-training.js";
import { drawCard, encodePng, generationCard, generationCardPng, previewPng, type CardSpec, type Raster } from "./test-card.js";

/**
 * The emulator's async invocations (InvokeEndpointAsync). It validates the request like SageMaker
 * Runtime, answers with the output and failure locations, and processes the request in the
 * background the way an endpoint running the "Stable Diffusion on AWS" WebUI container does: a
 * per-endpoint FIFO queue served by instances × MaxConcurrentInvocationsPerInstance workers; the
 * input payload `{"task", "param_s3", "models", "progress"?}` read from S3 (or taken from the
 * request's inline Body, which newer SDKs can send instead of InputLocation); the WebUI parameters read
 * from `param_s3`; a wait per configured timings; and either the WebUI's response as the `.out`
 * document (with test-card PNGs, see test-card.ts) or a failure document where a WebUI would refuse
 * the parameters. Progress callbacks follow docs/progress-callback.md. There are no SNS
 * notifications: callers poll the output and failure locations. Nothing here survives a restart.
 */

type Json = Record<string, unknown>;

/** The InvokeEndpointAsync members, as the SDK names them, read from the request headers. */
export interface AsyncInvocationInput {
  InputLocation?: string;
  InferenceId?: string;
  ContentType?: string;
  Accept?: string;
  CustomAttributes?: string;
  InvocationTimeoutSeconds?: string;
  RequestTTLSeconds?: string;
  S3OutputPathExtension?: string;
  Filename?: string;
}

const INPUT_HEADERS: Record<keyof AsyncInvocationInput, string> = {
  InputLocation: "x-amzn-sagemaker-inputlocation",
  InferenceId: "x-amzn-sagemaker-inference-id",
  ContentType: "x-amzn-sagemaker-content-type",
  Accept: "x-amzn-sagemaker-accept",
  CustomAttributes: "x-amzn-sagemaker-custom-attributes",
  InvocationTimeoutSeconds: "x-amzn-sagemaker-invocationtimeoutseconds",
  RequestTTLSeconds: "x-amzn-sagemaker-requestttlseconds",
  S3OutputPathExtension: "x-amzn-sagemaker-s3outputpathextension",
  Filename: "x-amzn-sagemaker-filename",
};

/** The most bytes an inline Body may have (the SDK documents 128,000). */
export const MAX_INLINE_BODY = 128_000;

/** Reads the InvokeEndpointAsync members from (lower-cased) request headers. */
export function asyncInvocationInput(headers: Record<string, string>): AsyncInvocationInput {
  const input: AsyncInvocationInput = {};
  for (const [member, header] of Object.entries(INPUT_HEADERS) as Array<[keyof AsyncInvocationInput, string]>) {
    const value = headers[header];
    if (value !== undefined) input[member] = value;
  }
  return input;
}

export type InvocationStatus = "queued" | "running" | "completed" | "failed" | "expired";

/** One accepted invocation and what became of it. Times are epoch ms. */
export interface InvocationRecord {
  inferenceId: string;
  endpointName: string;
  /** Where the payload was read from; absent when it came inline as the request Body. */
  inputLocation?: string;
  outputLocation: string;
  failureLocation: string;
  status: InvocationStatus;
  receivedAt: number;
  startedAt?: number;
  finishedAt?: number;
  task?: string;
  totalSteps?: number;
  /** The failure document's `error` (and why the document could not be written, if so). */
  error?: string;
  progress: { url?: string; ignored?: string; posted: number; failed: number; dropped: number };
}

export interface EndpointQueueStats {
  endpointName: string;
  instances: number;
  maxConcurrentInvocationsPerInstance: number;
  capacity: number;
  queued: number;
  running: number;
  /** The most invocations that ran at once. */
  peakRunning: number;
  completed: number;
  failed: number;
  expired: number;
}

export interface AcceptedInvocation {
  inferenceId: string;
  outputLocation: string;
  failureLocation: string;
}

// ---------------------------------------------------------------------------------------------
// JSON as Python writes it: the WebUI's clients send `NaN`, `Infinity` and `-Infinity` literals
// (read with parseWebUiJson from the domain).

const NON_FINITE = "\u0000nonfinite:";

/** JSON.stringify that writes non-finite numbers as Python's json.dumps does (`NaN`, `Infinity`). */
export function stringifyPythonJson(value: unknown): string {
  let found = false;
  const text = JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === "number" && !Number.isFinite(v)) {
      found = true;
      return `${NON_FINITE}${String(v)}`;
    }
    return v;
  });
  return found ? text.replace(/"\\u0000nonfinite:(NaN|Infinity|-Infinity)"/g, "$1") : text;
}

// ---------------------------------------------------------------------------------------------
// Validation of the request, as SageMaker Runtime reports it.

const S3_URI_PATTERN = /^(https|s3):\/\/([^/]+)\/?(.*)$/;
const INFERENCE_ID_PATTERN = /^\S[\x20-\x7e]*$/;

function runtimeValidation(message: string): AwsError {
  return new AwsError(400, "ValidationError", message);
}

function integerMember(value: string | undefined, path: string, min: number, max: number, found: string[]): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) {
    found.push(`Value '${value}' at '${path}' failed to satisfy constraint: Member must be an integer`);
    return undefined;
  }
  if (n < min) found.push(`Value '${n}' at '${path}' failed to satisfy constraint: Member must have value greater than or equal to ${min}`);
  else if (n > max) found.push(`Value '${n}' at '${path}' failed to satisfy constraint: Member must have value less than or equal to ${max}`);
  return n;
}

function lengthMember(value: string | undefined, path: string, max: number, found: string[]): void {
  if (value !== undefined && value.length > max) found.push(`Value '${value}' at '${path}' failed to satisfy constraint: Member must have length less than or equal to ${max}`);
}

function joinS3(prefix: string, name: string): string {
  return prefix.endsWith("/") ? `${prefix}${name}` : `${prefix}/${name}`;
}

function parseS3Uri(uri: string): { bucket: string; key: string } {
  const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri);
  if (!match) throw new Error(`${uri} is not an s3://bucket/key URI`);
  return { bucket: match[1]!, key: match[2]! };
}

// ---------------------------------------------------------------------------------------------
// Tasks: what the WebUI would do with the parameters.

/** A failure document, written to the failure location. */
export interface FailureDocument {
  error: string;
  detail: string;
  errors?: Array<{ loc: Array<string | number>; msg: string }>;
}

class Rejection extends Error {
  constructor(readonly document: FailureDocument) {
    super(document.detail);
  }
}

const KNOWN_TASKS = ["txt2img", "img2img", "extra-single-image", "extra-batch-images", "rembg"] as const;
type Task = (typeof KNOWN_TASKS)[number];

/** Most images one invocation renders (batch_size × n_iter). */
const MAX_IMAGES = 64;
/** Most steps an invocation waits for (sampling steps × iterations, hires pass included). */
const MAX_WAIT_STEPS = 1000;
const DEFAULT_STEPS = 20;
const MAX_INPUT_BYTES = 64 * 1024 * 1024;

class ParamErrors {
  readonly found: Array<{ loc: Array<string | number>; msg: string }> = [];
  add(loc: Array<string | number>, msg: string): undefined {
    this.found.push({ loc, msg });
    return undefined;
  }
  throwIfAny(): void {
    if (this.found.length === 0) return;
    throw new Rejection({ error: "ValidationError", detail: this.found.map((e) => `${e.loc.join(".")}: ${e.msg}`).join("; "), errors: this.found });
  }
}

/** The first NaN anywhere in a value, as a path. */
function findNaN(value: unknown, path: Array<string | number> = [], depth = 0): Array<string | number> | undefined {
  if (typeof value === "number") return Number.isNaN(value) ? path : undefined;
  if (depth > 32 || typeof value !== "object" || value === null) return undefined;
  const entries: Array<[string | number, unknown]> = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  for (const [k, v] of entries) {
    const found = findNaN(v, [...path, k], depth + 1);
    if (found) return found;
  }
  return undefined;
}

function intParam(p: Json, name: string, fallback: number, errors: ParamErrors): number {
  const v = p[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || !Number.isInteger(v)) return errors.add([name], `value is not a valid integer: ${String(v)}`) ?? fallback;
  return v;
}

function numberParam(p: Json, name: string, fallback: number, errors: ParamErrors): number {
  const v = p[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) return errors.add([name], `value is not a valid number: ${String(v)}`) ?? fallback;
  return v;
}

function stringParam(p: Json, name: string, fallback: string, errors: ParamErrors): string {
  const v = p[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "string") return errors.add([name], "str type expected") ?? fallback;
  return v;
}

function checkSide(value: number, name: string, errors: ParamErrors): void {
  if (value % 8 !== 0 || value < 64 || value > 2048) errors.add([name], `must be a multiple of 8 between 64 and 2048, got ${value}`);
}

export interface ImageInfo {
  format: "png" | "jpeg" | "gif" | "webp" | "bmp";
  width: number;
  height: number;
}

/** Format and size of an encoded image, from its header; undefined when it is none of PNG, JPEG, GIF, WebP, BMP. */
export function imageInfo(b: Buffer): ImageInfo | undefined {
  if (b.length >= 24 && b.readUInt32BE(0) === 0x89504e47 && b.toString("latin1", 12, 16) === "IHDR") return { format: "png", width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
  if (b.length >= 10 && b.toString("latin1", 0, 3) === "GIF") return { format: "gif", width: b.readUInt16LE(6), height: b.readUInt16LE(8) };
  if (b.length >= 26 && b.toString("latin1", 0, 2) === "BM") return { format: "bmp", width: Math.abs(b.readInt32LE(18)), height: Math.abs(b.readInt32LE(22)) };
  if (b.length >= 30 && b.toString("latin1", 0, 4) === "RIFF" && b.toString("latin1", 8, 12) === "WEBP") {
    const chunk = b.toString("latin1", 12, 16);
    if (chunk === "VP8X") return { format: "webp", width: 1 + b.readUIntLE(24, 3), height: 1 + b.readUIntLE(27, 3) };
    if (chunk === "VP8L") {
      const bits = b.readUInt32LE(21);
      return { format: "webp", width: 1 + (bits & 0x3fff), height: 1 + ((bits >> 14) & 0x3fff) };
    }
    if (chunk === "VP8 ") return { format: "webp", width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff };
    return undefined;
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let i = 2;
    while (i + 9 < b.length) {
      if (b[i] !== 0xff) return undefined;
      const marker = b[i + 1]!;
      if (marker === 0xff) {
        i++;
        continue;
      }
      if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
        i += 2;
        continue;
      }
      const length = b.readUInt16BE(i + 2);
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) return { format: "jpeg", width: b.readUInt16BE(i + 7), height: b.readUInt16BE(i + 5) };
      i += 2 + length;
    }
    return undefined;
  }
  return undefined;
}

/** Decodes a WebUI base64 image (optionally a data: URL) as the WebUI would, or records why it is broken. */
function decodeImage(value: unknown, loc: Array<string | number>, errors: ParamErrors): ImageInfo | undefined {
  if (typeof value !== "string") return errors.add(loc, "str type expected");
  const data = value.startsWith("data:image/") ? value.slice(value.indexOf(",") + 1) : value;
  const compact = data.replace(/\s+/g, "");
  if (compact.length === 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 === 1) return errors.add(loc, "Invalid encoded image: not base64");
  const info = imageInfo(Buffer.from(compact, "base64"));
  if (!info || info.width < 1 || info.height < 1) return errors.add(loc, "Invalid encoded image: cannot identify image file");
  return info;
}

/** A derived 32-bit seed, as the WebUI picks a random one for -1. */
function derivedSeed(key: string): number {
  return createHash("sha256").update(key).digest().readUInt32BE(0);
}

const round = (n: number) => Math.round(n * 1e4) / 1e4;

/** What an invocation will produce once its steps have passed. */
interface TaskPlan {
  totalSteps: number;
  /** The card progress previews fade in from. */
  previewCard: () => Raster;
  /** The `.out` document. */
  output: () => Json;
}

function modelName(payload: Json): string | undefined {
  const models = payload.models as Json | undefined;
  const sd = models && Array.isArray(models["Stable-diffusion"]) ? (models["Stable-diffusion"][0] as Json | undefined) : undefined;
  return typeof sd?.model_name === "string" ? sd.model_name : undefined;
}

function planGeneration(task: "txt2img" | "img2img", p: Json, payload: Json, inferenceId: string): TaskPlan {
  const errors = new ParamErrors();
  if (task === "txt2img" && typeof p.prompt !== "string") errors.add(["prompt"], p.prompt === undefined || p.prompt === null ? "field required" : "str type expected");
  const prompt = typeof p.prompt === "string" ? p.prompt : "";
  const negative = stringParam(p, "negative_prompt", "", errors);
  const width = intParam(p, "width", 512, errors);
  const height = intParam(p, "height", 512, errors);
  checkSide(width, "width", errors);
  checkSide(height, "height", errors);
  const steps = intParam(p, "steps", DEFAULT_STEPS, errors);
  if (steps < 1 || steps > 150) errors.add(["steps"], `must be between 1 and 150, got ${steps}`);
  const batchSize = intParam(p, "batch_size", 1, errors);
  const nIter = intParam(p, "n_iter", 1, errors);
  if (batchSize < 1) errors.add(["batch_size"], "must be at least 1");
  if (nIter < 1) errors.add(["n_iter"], "must be at least 1");
  if (batchSize * nIter > MAX_IMAGES) errors.add(["batch_size"], `the emulator renders at most ${MAX_IMAGES} images (batch_size × n_iter)`);
  const cfg = numberParam(p, "cfg_scale", 7, errors);
  const seedValue = numberParam(p, "seed", -1, errors);
  const subseedValue = numberParam(p, "subseed", -1, errors);
  const sampler = typeof p.sampler_name === "string" && p.sampler_name ? p.sampler_name : typeof p.sampler_index === "string" && p.sampler_index ? p.sampler_index : "Euler a";
  let denoising: number | undefined;
  let samplingSteps = steps;
  if (task === "img2img") {
    if (!Array.isArray(p.init_images) || p.init_images.length === 0) errors.add(["init_images"], "img2img needs at least one init image");
    else p.init_images.forEach((img, i) => decodeImage(img, ["init_images", i], errors));
    if (typeof p.mask === "string") decodeImage(p.mask, ["mask"], errors);
    denoising = numberParam(p, "denoising_strength", 0.75, errors);
    if (denoising < 0 || denoising > 1) errors.add(["denoising_strength"], `must be between 0 and 1, got ${denoising}`);
    // The WebUI runs int(min(denoising, 0.999) × steps) + 1 sampling steps for img2img.
    samplingSteps = Math.max(1, Math.floor(Math.min(Math.max(denoising, 0), 0.999) * steps) + 1);
  }
  let outWidth = width;
  let outHeight = height;
  let hiresSteps = 0;
  let hiresScale: number | undefined;
  if (task === "txt2img" && p.enable_hr === true) {
    const scale = numberParam(p, "hr_scale", 2, errors);
    const rx = intParam(p, "hr_resize_x", 0, errors);
    const ry = intParam(p, "hr_resize_y", 0, errors);
    if (rx > 0 || ry > 0) {
      outWidth = rx > 0 ? rx : Math.round((width * ry) / height);
      outHeight = ry > 0 ? ry : Math.round((height * rx) / width);
    } else {
      hiresScale = scale;
      outWidth = Math.floor(width * scale);
      outHeight = Math.floor(height * scale);
    }
    if (outWidth < 64 || outHeight < 64 || outWidth > 4096 || outHeight > 4096) errors.add(["hr_scale"], `the hires size ${outWidth}x${outHeight} is outside 64..4096`);
    const second = intParam(p, "hr_second_pass_steps", 0, errors);
    hiresSteps = second > 0 ? second : steps;
  }
  errors.throwIfAny();

  const count = batchSize * nIter;
  const seed = seedValue === -1 ? derivedSeed(`seed:${inferenceId}`) : Math.trunc(seedValue);
  const subseed = subseedValue === -1 ? derivedSeed(`subseed:${inferenceId}`) : Math.trunc(subseedValue);
  const seeds = Array.from({ length: count }, (_, i) => seed + i);
  const model = modelName(payload);
  const notes = [task === "img2img" ? `img2img, denoising ${round(denoising!)}` : hiresScale || hiresSteps ? `txt2img, hires ${outWidth}x${outHeight}` : "txt2img", ...(model ? [`model ${model} (not loaded)`] : [])];
  const infotext = (s: number) =>
    `${prompt}${negative ? `\nNegative prompt: ${negative}` : ""}\nSteps: ${steps}, Sampler: ${sampler}, CFG scale: ${round(cfg)}, Seed: ${s}, Size: ${width}x${height}, Model: emulated` +
    `${denoising !== undefined ? `, Denoising strength: ${round(denoising)}` : ""}${hiresSteps ? `, Hires upscale: ${hiresScale ?? `${outWidth}x${outHeight}`}, Hires steps: ${hiresSteps}` : ""}`;
  const card = (s: number) => ({ width: outWidth, height: outHeight, prompt, steps, sampler, seed: s, notes });
  return {
    totalSteps: (samplingSteps + hiresSteps) * nIter,
    previewCard: () => drawCard(generationCard(card(seed))),
    output: () => {
      const infotexts = seeds.map(infotext);
      const images = seeds.map((s, i) => generationCardPng(card(s), infotexts[i]).toString("base64"));
      const info = {
        prompt,
        all_prompts: seeds.map(() => prompt),
        negative_prompt: negative,
        all_negative_prompts: seeds.map(() => negative),
        seed,
        all_seeds: seeds,
        subseed,
        all_subseeds: seeds.map((_, i) => subseed + i),
        subseed_strength: typeof p.subseed_strength === "number" ? p.subseed_strength : 0,
        width: outWidth,
        height: outHeight,
        sampler_name: sampler,
        cfg_scale: cfg,
        steps,
        batch_size: batchSize,
        restore_faces: p.restore_faces === true,
        face_restoration_model: null,
        sd_model_name: "emulated",
        sd_model_hash: null,
        sd_vae_name: null,
        sd_vae_hash: null,
        seed_resize_from_w: -1,
        seed_resize_from_h: -1,
        denoising_strength: denoising ?? null,
        extra_generation_params: {},
        index_of_first_image: 0,
        infotexts,
        styles: Array.isArray(p.styles) ? p.styles : [],
        job_timestamp: new Date().toISOString().replace(/\D/g, "").slice(0, 14),
        clip_skip: 1,
        is_using_inpainting_conditioning: false,
        version: "emulated",
      };
      // The WebUI echoes the request; img2img drops the init images unless include_init_images.
      const parameters: Json = { ...p };
      if (task === "img2img" && p.include_init_images !== true) {
        parameters.init_images = null;
        parameters.mask = null;
      }
      return { images, parameters, info: JSON.stringify(info) };
    },
  };
}

/** The size an extras upscale produces for an input of `info`'s size. */
function upscaledSize(p: Json, info: ImageInfo, errors: ParamErrors): { width: number; height: number; label: string } {
  const mode = intParam(p, "resize_mode", 0, errors);
  if (mode === 1) {
    const width = intParam(p, "upscaling_resize_w", 512, errors);
    const height = intParam(p, "upscaling_resize_h", 512, errors);
    if (width < 1 || height < 1 || width > 8192 || height > 8192) errors.add(["upscaling_resize_w"], `the target size ${width}x${height} is outside 1..8192`);
    return { width, height, label: `to ${width}x${height}` };
  }
  const factor = numberParam(p, "upscaling_resize", 2, errors);
  if (factor < 1 || factor > 8) errors.add(["upscaling_resize"], `must be between 1 and 8, got ${factor}`);
  return { width: Math.round(info.width * factor), height: Math.round(info.height * factor), label: `by ${round(factor)}` };
}

function extrasCard(input: ImageInfo, out: { width: number; height: number }, lines: string[], key: string): CardSpec {
  return {
    width: Math.max(1, out.width),
    height: Math.max(1, out.height),
    key: JSON.stringify(["extras", key, input, out]),
    lines: ["EMULATED — not a real generation", ...lines, `${input.width}x${input.height} ${input.format} -> ${out.width}x${out.height}`],
  };
}

function planExtras(task: "extra-single-image" | "extra-batch-images" | "rembg", p: Json): TaskPlan {
  const errors = new ParamErrors();
  const upscaler = stringParam(p, "upscaler_1", "None", errors);
  const cards: CardSpec[] = [];
  let htmlInfo = "";
  if (task === "rembg") {
    const info = decodeImage(p.input_image, ["input_image"], errors);
    const model = stringParam(p, "model", "u2net", errors);
    errors.throwIfAny();
    cards.push(extrasCard(info!, info!, [`rembg, model ${model}`], `rembg:${model}`));
  } else if (task === "extra-single-image") {
    const info = decodeImage(p.image, ["image"], errors);
    const size = info ? upscaledSize(p, info, errors) : undefined;
    errors.throwIfAny();
    cards.push(extrasCard(info!, size!, [`extras: upscale ${size!.label}, ${upscaler}`], `single:${upscaler}`));
    htmlInfo = `<p>Postprocess upscale ${size!.label}, Postprocess upscaler: ${upscaler}</p>`;
  } else {
    const list = p.imageList;
    if (!Array.isArray(list) || list.length === 0) errors.add(["imageList"], "extra-batch-images needs at least one image");
    else if (list.length > MAX_IMAGES) errors.add(["imageList"], `the emulator renders at most ${MAX_IMAGES} images`);
    const infos = Array.isArray(list) ? list.slice(0, MAX_IMAGES).map((item, i) => decodeImage((item as Json | null)?.data, ["imageList", i, "data"], errors)) : [];
    const sizes = infos.map((info) => (info ? upscaledSize(p, info, errors) : undefined));
    errors.throwIfAny();
    infos.forEach((info, i) => cards.push(extrasCard(info!, sizes[i]!, [`extras batch ${i + 1}/${infos.length}: upscale ${sizes[i]!.label}, ${upscaler}`], `batch:${upscaler}`)));
    htmlInfo = `<p>Postprocess upscale ${sizes[0]!.label}, Postprocess upscaler: ${upscaler}</p>`;
  }
  const steps = intParam(p, "steps", DEFAULT_STEPS, errors);
  errors.throwIfAny();
  return {
    totalSteps: Math.max(1, steps),
    previewCard: () => drawCard(cards[0]!),
    output: () => {
      const images = cards.map((c) => encodePng(drawCard(c), { alpha: task === "rembg" }).toString("base64"));
      if (task === "rembg") return { image: images[0] };
      if (task === "extra-single-image") return { html_info: htmlInfo, image: images[0] };
      return { html_info: htmlInfo, images };
    },
  };
}

function planTask(task: Task, params: Json, payload: Json, inferenceId: string): TaskPlan {
  const nan = findNaN(params);
  if (nan) throw new Rejection({ error: "ValidationError", detail: `${nan.join(".")}: NaN is not a valid value`, errors: [{ loc: nan, msg: "NaN is not a valid value" }] });
  if (task === "txt2img" || task === "img2img") return planGeneration(task, params, payload, inferenceId);
  return planExtras(task, params);
}

// ---------------------------------------------------------------------------------------------
// Progress callbacks (docs/progress-callback.md).

interface ProgressTarget {
  url: string;
  token: string;
  every: number;
}

function progressTarget(value: unknown): { target?: ProgressTarget; ignored?: string } {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) return { ignored: "progress is not an object" };
  const v = value as Json;
  let url: URL;
  try {
    url = new URL(String(v.url));
  } catch {
    return { ignored: "progress.url is not a URL" };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return { ignored: "progress.url is not http(s)" };
  if (typeof v.token !== "string" || v.token.length === 0) return { ignored: "progress.token is missing" };
  const every = v.every === undefined || v.every === null ? 5 : v.every;
  if (typeof every !== "number" || !Number.isInteger(every) || every < 0) return { ignored: "progress.every is not a whole number >= 0" };
  return { target: { url: url.toString(), token: v.token, every } };
}

/** Posts progress in order, one at a time, never holding the job: at most a few wait; more are dropped. */
class ProgressSender {
  private chain: Promise<void> = Promise.resolve();
  private waiting = 0;

  constructor(
    private readonly target: ProgressTarget,
    private readonly timeoutMs: number,
    private readonly record: InvocationRecord,
    private readonly stopSignal: AbortSignal,
  ) {}

  post(body: Json): void {
    if (this.waiting >= 8 || this.stopSignal.aborted) {
      this.record.progress.dropped++;
      return;
    }
    this.waiting++;
    this.chain = this.chain
      .then(async () => {
        const res = await fetch(this.target.url, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${this.target.token}` },
          body: JSON.stringify(body),
          signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.stopSignal]),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) this.record.progress.posted++;
        else this.record.progress.failed++;
      })
      .catch(() => {
        this.record.progress.failed++;
      })
      .finally(() => {
        this.waiting--;
      });
  }

  /** Resolves when what was posted so far has been delivered or given up on. */
  drained(): Promise<void> {
    return this.chain;
  }
}

// ---------------------------------------------------------------------------------------------
// The engine.

interface Job {
  record: InvocationRecord;
  /** The payload, when it came inline. */
  inline?: Buffer;
  ttlMs: number;
  timeoutMs: number;
  abort: AbortController;
  done?: Promise<unknown>;
  sender?: ProgressSender;
}

interface EndpointQueue {
  name: string;
  pending: Job[];
  running: Set<Job>;
  peakRunning: number;
  completed: number;
  failed: number;
  expired: number;
  timer?: NodeJS.Timeout;
}

function parseJsonText(text: string, what: string): unknown {
  try {
    return parseWebUiJson(text);
  } catch (e) {
    throw new Rejection({ error: "InvalidInput", detail: `${what} is not JSON: ${(e as Error).message}` });
  }
}

class Timeout extends Error {}
class Stopped extends Error {}

/** Invocation records kept (oldest forgotten first). */
const MAX_RECORDS = 10_000;
/** How often a queue that cannot start anything looks again (instances added, TTLs passed). */
const QUEUE_POLL_MS = 100;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason as Error);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export class InvocationEngine {
  private readonly queues = new Map<string, EndpointQueue>();
  private readonly records: InvocationRecord[] = [];
  private readonly waiters = new Map<InvocationRecord, Array<(r: InvocationRecord) => void>>();
  private readonly stopController = new AbortController();
  private s3Client?: S3Client;

  constructor(private readonly state: EmulatorState) {}

  private get s3(): S3Client {
    this.s3Client ??= createEmulatorS3Client(this.state.settings);
    return this.s3Client;
  }

  /**
   * Validates an InvokeEndpointAsync request like SageMaker Runtime and queues it; throws AwsError
   * when refused. `body` is the request body: the payload when sent inline instead of InputLocation.
   */
  accept(endpointName: string, input: AsyncInvocationInput, body: Buffer = Buffer.alloc(0)): AcceptedInvocation {
    const found: string[] = [];
    const inline = body.length > 0;
    if (inline) {
      if (input.InputLocation !== undefined) throw runtimeValidation("Body and InputLocation are mutually exclusive. Provide exactly one of them.");
      if (body.length > MAX_INLINE_BODY) found.push(`Value at 'body' failed to satisfy constraint: Member must have length less than or equal to ${MAX_INLINE_BODY}`);
    } else if (input.InputLocation === undefined || input.InputLocation === "") found.push("Value null at 'inputLocation' failed to satisfy constraint: Member must not be null");
    else {
      lengthMember(input.InputLocation, "inputLocation", 1024, found);
      if (!S3_URI_PATTERN.test(input.InputLocation)) found.push(`Value '${input.InputLocation}' at 'inputLocation' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$`);
    }
    if (input.InferenceId !== undefined) {
      lengthMember(input.InferenceId, "inferenceId", 64, found);
      if (!INFERENCE_ID_PATTERN.test(input.InferenceId)) found.push(`Value '${input.InferenceId}' at 'inferenceId' failed to satisfy constraint: Member must satisfy regular expression pattern: \\A\\S[\\p{Print}]*\\z`);
    }
    lengthMember(input.ContentType, "contentType", 1024, found);
    lengthMember(input.Accept, "accept", 1024, found);
    lengthMember(input.CustomAttributes, "customAttributes", 1024, found);
    const timeout = integerMember(input.InvocationTimeoutSeconds, "invocationTimeoutSeconds", 1, 3600, found);
    const ttl = integerMember(input.RequestTTLSeconds, "requestTTLSeconds", 60, 21600, found);
    if (found.length > 0) throw runtimeValidation(`${found.length} validation error${found.length > 1 ? "s" : ""} detected: ${found.join("; ")}`);
    const inputLocation = input.InputLocation;
    if (inputLocation !== undefined && !inputLocation.startsWith("s3://")) throw runtimeValidation(`The emulator reads InputLocation only from s3:// URIs, not ${inputLocation}.`);

    const { accountId } = this.state.settings;
    const endpoint = this.state.endpoint(endpointName);
    // SageMaker Runtime knows an endpoint only while it serves: InService, or Updating (which keeps serving).
    if (!endpoint || (endpoint.status !== "InService" && endpoint.status !== "Updating")) throw runtimeValidation(`Endpoint ${endpointName} of account ${accountId} not found.`);
    const asyncConfig = this.state.endpointConfigs[endpoint.configName]?.asyncInferenceConfig as Json | undefined;
    const output = asyncConfig?.OutputConfig as Json | undefined;
    if (typeof output?.S3OutputPath !== "string") throw runtimeValidation(`Endpoint ${endpointName} of account ${accountId} is not configured for asynchronous inference (its endpoint configuration has no AsyncInferenceConfig.OutputConfig.S3OutputPath).`);

    const inferenceId = input.InferenceId ?? randomUUID();
    // S3OutputPathExtension extends both paths; Filename names the output (the failure document keeps the id's name).
    const extend = (prefix: string) => (input.S3OutputPathExtension ? joinS3(prefix, input.S3OutputPathExtension.replace(/^\/+/, "")) : prefix);
    const outputLocation = joinS3(extend(output.S3OutputPath), input.Filename ?? `${inferenceId}.out`);
    const failureLocation = joinS3(extend(typeof output.S3FailurePath === "string" ? output.S3FailurePath : output.S3OutputPath), `${inferenceId}-error.out`);
    const record: InvocationRecord = {
      inferenceId,
      endpointName,
      ...(inputLocation !== undefined ? { inputLocation } : {}),
      outputLocation,
      failureLocation,
      status: "queued",
      receivedAt: this.state.nowMs(),
      progress: { posted: 0, failed: 0, dropped: 0 },
    };
    this.records.push(record);
    if (this.records.length > MAX_RECORDS) this.records.splice(0, this.records.length - MAX_RECORDS);
    const queue = this.queue(endpointName);
    queue.pending.push({ record, ttlMs: (ttl ?? 21600) * 1000, timeoutMs: (timeout ?? 900) * 1000, abort: new AbortController(), ...(inline ? { inline: Buffer.from(body) } : {}) });
    // Start on the next tick, after the 202 has been sent.
    setImmediate(() => this.pump(queue));
    return { inferenceId, outputLocation, failureLocation };
  }

  /** Queue figures of one endpoint, for tests and the emulator's own diagnostics. */
  stats(endpointName: string): EndpointQueueStats {
    const q = this.queue(endpointName);
    const endpoint = this.state.endpoint(endpointName);
    const perInstance = endpoint ? this.perInstance(endpoint) : 1;
    const instances = endpoint ? this.instances(endpoint) : 0;
    return {
      endpointName,
      instances,
      maxConcurrentInvocationsPerInstance: perInstance,
      capacity: instances * perInstance,
      queued: q.pending.length,
      running: q.running.size,
      peakRunning: q.peakRunning,
      completed: q.completed,
      failed: q.failed,
      expired: q.expired,
    };
  }

  /** All invocations, oldest first. */
  list(): InvocationRecord[] {
    return [...this.records];
  }

  /** The latest invocation with this InferenceId. */
  get(inferenceId: string): InvocationRecord | undefined {
    return this.records.findLast((r) => r.inferenceId === inferenceId);
  }

  /** Resolves when the invocation is completed, failed or expired. */
  settled(inferenceId: string): Promise<InvocationRecord> {
    const record = this.get(inferenceId);
    if (!record) return Promise.reject(new Error(`no invocation ${inferenceId}`));
    if (record.status !== "queued" && record.status !== "running") return Promise.resolve(record);
    return new Promise((resolve) => {
      const list = this.waiters.get(record) ?? [];
      list.push(resolve);
      this.waiters.set(record, list);
    });
  }

  /** Stops processing: running invocations are abandoned without writing anything. */
  async stop(): Promise<void> {
    this.stopController.abort(new Stopped("the emulator stopped"));
    const running: Array<Promise<unknown> | undefined> = [];
    for (const q of this.queues.values()) {
      if (q.timer) clearTimeout(q.timer);
      for (const job of q.running) {
        job.abort.abort(new Stopped("the emulator stopped"));
        running.push(job.done);
      }
    }
    await Promise.allSettled(running);
    this.s3Client?.destroy();
  }

  private queue(name: string): EndpointQueue {
    let q = this.queues.get(name);
    if (!q) {
      q = { name, pending: [], running: new Set(), peakRunning: 0, completed: 0, failed: 0, expired: 0 };
      this.queues.set(name, q);
    }
    return q;
  }

  private perInstance(endpoint: EndpointRecord): number {
    const client = (this.state.endpointConfigs[endpoint.configName]?.asyncInferenceConfig as Json | undefined)?.ClientConfig as Json | undefined;
    const n = client?.MaxConcurrentInvocationsPerInstance;
    return typeof n === "number" && Number.isInteger(n) && n >= 1 ? n : 1;
  }

  private instances(endpoint: EndpointRecord): number {
    return Object.values(endpoint.current).reduce((a, b) => a + b, 0);
  }

  private pump(q: EndpointQueue): void {
    if (this.stopController.signal.aborted) return;
    const now = this.state.nowMs();
    for (const job of [...q.pending]) {
      if (now - job.record.receivedAt > job.ttlMs) {
        q.pending.splice(q.pending.indexOf(job), 1);
        void this.conclude(job, "expired", { error: "RequestExpired", detail: `The request waited ${Math.round((now - job.record.receivedAt) / 1000)} s in the queue, longer than its RequestTTLSeconds (${job.ttlMs / 1000}).` });
      }
    }
    const endpoint = this.state.endpoint(q.name);
    if (!endpoint || endpoint.status === "Deleting") {
      for (const job of q.pending.splice(0)) {
        void this.conclude(job, "failed", { error: "EndpointDeleted", detail: `Endpoint ${q.name} was deleted before the request ran.` });
      }
      return;
    }
    const capacity = this.instances(endpoint) * this.perInstance(endpoint);
    while (q.pending.length > 0 && q.running.size < capacity) this.start(q, q.pending.shift()!);
    if (q.pending.length > 0 && !q.timer) {
      q.timer = setTimeout(() => {
        q.timer = undefined;
        this.pump(q);
      }, QUEUE_POLL_MS);
      q.timer.unref();
    }
  }

  private start(q: EndpointQueue, job: Job): void {
    q.running.add(job);
    q.peakRunning = Math.max(q.peakRunning, q.running.size);
    job.record.status = "running";
    job.record.startedAt = this.state.nowMs();
    job.done = this.run(job).finally(() => {
      q.running.delete(job);
      this.pump(q);
    });
  }

  /** Runs one invocation to its output or failure document. */
  private async run(job: Job): Promise<InvocationStatus | undefined> {
    const signal = AbortSignal.any([job.abort.signal, this.stopController.signal]);
    const timer = setTimeout(() => job.abort.abort(new Timeout()), job.timeoutMs);
    try {
      const body = await this.execute(job, signal);
      return await this.conclude(job, "completed", body);
    } catch (e) {
      if (e instanceof Stopped || this.stopController.signal.aborted) return undefined;
      if (e instanceof Timeout) return this.conclude(job, "failed", { error: "InvocationTimeout", detail: `The invocation did not finish within its InvocationTimeoutSeconds (${job.timeoutMs / 1000}).` });
      if (e instanceof Rejection) return this.conclude(job, "failed", e.document);
      return this.conclude(job, "failed", { error: "InternalError", detail: (e as Error)?.message ?? String(e) });
    } finally {
      clearTimeout(timer);
    }
  }

  private async execute(job: Job, signal: AbortSignal): Promise<string> {
    const { record } = job;
    const { invocationStartMs, invocationStepMs, progressCallbackTimeoutMs } = this.state.settings;
    const payload = job.inline ? parseJsonText(job.inline.toString("utf8"), "the invocation input (inline Body)") : await this.readJson(record.inputLocation!, "the invocation input", signal);
    if (typeof payload !== "object" || payload === null || Array.isArray(payload)) throw new Rejection({ error: "InvalidInput", detail: "The invocation input is not a JSON object." });
    const p = payload as Json;
    const progress = progressTarget(p.progress);
    if (progress.target) {
      record.progress.url = progress.target.url;
      job.sender = new ProgressSender(progress.target, progressCallbackTimeoutMs, record, this.stopController.signal);
    } else if (progress.ignored) record.progress.ignored = progress.ignored;
    if (p.task === "db-create-model" || p.task === "merge-checkpoint") {
      record.task = p.task;
      await sleep(invocationStartMs + 4 * invocationStepMs, signal);
      return p.task === "db-create-model" ? this.createModel(p, signal) : this.mergeCheckpoints(p, signal);
    }
    if (typeof p.task !== "string" || !(KNOWN_TASKS as readonly string[]).includes(p.task)) {
      throw new Rejection({ error: "UnknownTask", detail: `Unknown task ${JSON.stringify(p.task ?? null)}; expected one of ${[...KNOWN_TASKS, "db-create-model", "merge-checkpoint"].join(", ")}.` });
    }
    const task = p.task as Task;
    record.task = task;
    if (typeof p.param_s3 !== "string" || !p.param_s3.startsWith("s3://")) throw new Rejection({ error: "ValidationError", detail: "param_s3: an s3:// URI of the WebUI parameters is required", errors: [{ loc: ["param_s3"], msg: "field required" }] });
    const params = await this.readJson(p.param_s3, "param_s3", signal);
    if (typeof params !== "object" || params === null || Array.isArray(params)) throw new Rejection({ error: "ValidationError", detail: "param_s3: the WebUI parameters are not a JSON object" });
    const plan = planTask(task, params as Json, p, record.inferenceId);
    const total = Math.min(plan.totalSteps, MAX_WAIT_STEPS);
    record.totalSteps = total;

    await sleep(invocationStartMs, signal);
    let previewCard: Raster | undefined;
    for (let step = 1; step <= total; step++) {
      await sleep(invocationStepMs, signal);
      if (job.sender && progress.target) {
        const every = progress.target.every;
        let preview: string | undefined;
        if (every > 0 && step % every === 0) {
          previewCard ??= plan.previewCard();
          preview = previewPng(previewCard, step / total, `${record.inferenceId}:${step}`).toString("base64");
        }
        job.sender.post({ inference_id: record.inferenceId, step, total_steps: total, eta_seconds: round(((total - step) * invocationStepMs) / 1000), ...(preview ? { preview } : {}) });
      }
    }
    const document = stringifyPythonJson(plan.output());
    if (signal.aborted) throw signal.reason as Error;
    return document;
  }

  private async exists(uri: string, signal: AbortSignal): Promise<boolean> {
    try {
      const { bucket, key } = parseS3Uri(uri);
      await this.s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
      return true;
    } catch (e) {
      if (signal.aborted) throw signal.reason as Error;
      return false;
    }
  }

  private async put(uri: string, body: Buffer | string, contentType: string, signal: AbortSignal): Promise<void> {
    const { bucket, key } = parseS3Uri(uri);
    await this.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }), { abortSignal: signal });
  }

  /**
   * The utility container's `db-create-model` task: reads `db_create_model_payload` (a JSON string),
   * checks the source checkpoint is there, and uploads `<new_model_name>.tar` (a placeholder
   * Dreambooth working model) to `s3_output_path`; a missing source is the container's statusCode 500.
   */
  private async createModel(p: Json, signal: AbortSignal): Promise<string> {
    const errors = new ParamErrors();
    let payload: Json = {};
    if (typeof p.db_create_model_payload !== "string") errors.add(["db_create_model_payload"], "field required (a JSON string)");
    else {
      const parsed = parseJsonText(p.db_create_model_payload, "db_create_model_payload");
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) errors.add(["db_create_model_payload"], "must be a JSON object");
      else payload = parsed as Json;
    }
    errors.throwIfAny();
    const param = (payload.param ?? {}) as Json;
    const create = (param.create_model_params ?? {}) as Json;
    const out = payload.s3_output_path;
    const name = create.new_model_name;
    if (typeof out !== "string" || !out.startsWith("s3://")) errors.add(["db_create_model_payload", "s3_output_path"], "an s3:// URI is required");
    if (typeof name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name) || name.includes("..")) errors.add(["db_create_model_payload", "param", "create_model_params", "new_model_name"], "a model name is required");
    if (typeof create.ckpt_path !== "string" || create.ckpt_path === "") errors.add(["db_create_model_payload", "param", "create_model_params", "ckpt_path"], "field required");
    errors.throwIfAny();
    const source = param.ckpt_from_cloud === true && typeof param.s3_ckpt_path === "string" ? param.s3_ckpt_path : joinS3(String(payload.s3_input_path ?? ""), String(create.ckpt_path));
    const id = payload.job_id ?? null;
    if (!source.startsWith("s3://") || !(await this.exists(source, signal))) {
      return JSON.stringify({ id, statusCode: 500, message: `Traceback (most recent call last):\n  File "create_model.py", line 1, in create_model\nFileNotFoundError: [Errno 2] No such file or directory: '${source}'` });
    }
    const config = { model_name: name, model_dir: `models/dreambooth/${name as string}`, pretrained_model_name_or_path: `models/dreambooth/${name as string}/working`, src: create.ckpt_path, v2: false, resolution: create.is_512 === false ? 768 : 512, emulated: true };
    const archive = tar([
      { name: `models/dreambooth/${name as string}/db_config.json`, content: Buffer.from(JSON.stringify(config, null, 2)) },
      { name: `models/dreambooth/${name as string}/working/model_index.json`, content: Buffer.from(JSON.stringify({ _class_name: "StableDiffusionPipeline", note: "Placeholder written by the Diffgate SageMaker emulator; not a model." })) },
    ]);
    const location = joinS3(out as string, `${name as string}.tar`);
    await this.put(location, archive, "application/x-tar", signal);
    return JSON.stringify({ id, statusCode: 200, message: { response: [`Checkpoint ${String(create.ckpt_path)} extracted to models/dreambooth/${name as string}/working (emulated)`], config_dict: config }, outputLocation: [location] });
  }

  /**
   * The WebUI container's `merge-checkpoint` task: checks the merger's parameters and sources as the
   * WebUI model merger would, and uploads a placeholder merged checkpoint to `merge_model_s3`.
   */
  private async mergeCheckpoints(p: Json, signal: AbortSignal): Promise<string> {
    const errors = new ParamErrors();
    const m = p.merge_checkpoint_payload;
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      errors.add(["merge_checkpoint_payload"], "field required");
      errors.throwIfAny();
    }
    const q = m as Json;
    const methods = ["No interpolation", "Weighted sum", "Add difference"];
    for (const f of ["primary_model_name", "secondary_model_name"]) if (typeof q[f] !== "string" || q[f] === "") errors.add(["merge_checkpoint_payload", f], "field required");
    if (!methods.includes(String(q.interp_method))) errors.add(["merge_checkpoint_payload", "interp_method"], `must be one of ${methods.join(", ")}`);
    if (q.interp_method === "Add difference" && (typeof q.teritary_model_name !== "string" || q.teritary_model_name === "")) errors.add(["merge_checkpoint_payload", "teritary_model_name"], "Failed: Interpolation method (Add difference) requires a tertiary model.");
    if (typeof q.interp_amount !== "number" || q.interp_amount < 0 || q.interp_amount > 1) errors.add(["merge_checkpoint_payload", "interp_amount"], "must be a number from 0 to 1");
    if (typeof q.custom_name !== "string" || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(q.custom_name) || q.custom_name.includes("..")) errors.add(["merge_checkpoint_payload", "custom_name"], "a file name is required");
    if (!["safetensors", "ckpt"].includes(String(q.checkpoint_format))) errors.add(["merge_checkpoint_payload", "checkpoint_format"], "must be safetensors or ckpt");
    if (typeof q.merge_model_s3 !== "string" || !q.merge_model_s3.startsWith("s3://")) errors.add(["merge_checkpoint_payload", "merge_model_s3"], "an s3:// URI is required");
    errors.throwIfAny();
    const info = ((p.checkpoint_info as Json | undefined)?.["Stable-diffusion"] ?? []) as Array<{ model_name?: string; s3?: string }>;
    const names = [q.primary_model_name, q.secondary_model_name, ...(q.interp_method === "Add difference" ? [q.teritary_model_name] : [])] as string[];
    for (const n of names) {
      const entry = info.find((i) => i.model_name === n);
      if (!entry?.s3 || !(await this.exists(joinS3(entry.s3, n), signal))) throw new Rejection({ error: "ModelNotFound", detail: `Failed: Could not find checkpoint ${n}` });
    }
    const file = `${q.custom_name as string}.${q.checkpoint_format as string}`;
    const location = joinS3(q.merge_model_s3 as string, file);
    await this.put(location, placeholderSafetensors(`merge of ${names.join(" + ")} (${String(q.interp_method)}, ${String(q.interp_amount)})`), "application/octet-stream", signal);
    return JSON.stringify({ statusCode: 200, message: `Checkpoint saved to ${location}`, outputLocation: [location] });
  }

  private async readJson(uri: string, what: string, signal: AbortSignal): Promise<unknown> {
    let text: string;
    try {
      const { bucket, key } = parseS3Uri(uri);
      const res = await this.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
      if ((res.ContentLength ?? 0) > MAX_INPUT_BYTES) throw new Error(`larger than ${MAX_INPUT_BYTES} bytes`);
      text = (await res.Body?.transformToString("utf8")) ?? "";
    } catch (e) {
      if (signal.aborted) throw signal.reason as Error;
      throw new Rejection({ error: "InputNotReadable", detail: `Could not read ${what} from ${uri}: ${(e as Error).name}: ${(e as Error).message}` });
    }
    return parseJsonText(text, `${what} at ${uri}`);
  }

  /** Writes the output (completed) or failure document (failed, expired) and settles the record. */
  private async conclude(job: Job, status: "completed", body: string): Promise<InvocationStatus>;
  private async conclude(job: Job, status: "failed" | "expired", body: FailureDocument): Promise<InvocationStatus>;
  private async conclude(job: Job, status: "completed" | "failed" | "expired", body: string | FailureDocument): Promise<InvocationStatus> {
    const { record } = job;
    const location = status === "completed" ? record.outputLocation : record.failureLocation;
    if (typeof body !== "string") record.error = body.error;
    try {
      const { bucket, key } = parseS3Uri(location);
      await this.s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: typeof body === "string" ? body : JSON.stringify(body), ContentType: "application/json" }), { abortSignal: this.stopController.signal });
    } catch (e) {
      if (this.stopController.signal.aborted) return status;
      record.error = `${record.error ?? "OutputNotWritten"}; could not write ${location}: ${(e as Error).name}: ${(e as Error).message}`;
      status = "failed";
    }
    record.status = status;
    record.finishedAt = this.state.nowMs();
    const q = this.queue(record.endpointName);
    q.running.delete(job);
    q[status]++;
    for (const resolve of this.waiters.get(record) ?? []) resolve(record);
    this.waiters.delete(record);
    return status;
  }
}
