import { DomainError } from "./errors.js";

/**
 * Stable Diffusion WebUI API parameters: checked where their meaning is known, passed through
 * unchanged where not (extensions add fields such as `alwayson_scripts`).
 */

export const INFERENCE_TASK_TYPES = ["txt2img", "img2img", "extra-single-image", "extra-batch-images", "rembg"] as const;
export type InferenceTaskType = (typeof INFERENCE_TASK_TYPES)[number];

/** The WebUI's sampler names (A1111 1.6–1.10: k-diffusion, timesteps and LCM samplers). Case-sensitive, as the WebUI checks them. */
export const KNOWN_SAMPLERS = [
  "Euler a",
  "Euler",
  "LMS",
  "Heun",
  "DPM2",
  "DPM2 a",
  "DPM++ 2S a",
  "DPM++ 2M",
  "DPM++ SDE",
  "DPM++ 2M SDE",
  "DPM++ 2M SDE Heun",
  "DPM++ 2M SDE Heun Karras",
  "DPM++ 2M SDE Heun Exponential",
  "DPM++ 2M SDE Exponential",
  "DPM++ 2M SDE Karras",
  "DPM++ 3M SDE",
  "DPM++ 3M SDE Karras",
  "DPM++ 3M SDE Exponential",
  "DPM fast",
  "DPM adaptive",
  "LMS Karras",
  "DPM2 Karras",
  "DPM2 a Karras",
  "DPM++ 2S a Karras",
  "DPM++ 2M Karras",
  "DPM++ SDE Karras",
  "Restart",
  "DDIM",
  "DDIM CFG++",
  "PLMS",
  "UniPC",
  "LCM",
] as const;
export type KnownSampler = (typeof KNOWN_SAMPLERS)[number];
const SAMPLER_SET: ReadonlySet<string> = new Set(KNOWN_SAMPLERS);

export interface WebUiCheckOptions {
  /** Most images one request may produce (batch_size × n_iter, or extras batch inputs). Default 64. */
  maxImages?: number;
  /** Most pixels (width × height, WebUI default 512 each when absent) per image. Default 2048 × 2048. */
  maxPixels?: number;
}

export interface WebUiSummary {
  width?: number;
  height?: number;
  steps?: number;
  batchSize?: number;
  nIter?: number;
  /** Images the request produces (extras: images processed). */
  images: number;
  seed?: number;
  sampler?: string;
}

export interface WebUiCheckResult {
  /** The very object passed in, unchanged. */
  params: Record<string, unknown>;
  summary: WebUiSummary;
}

const DEFAULT_MAX_IMAGES = 64;
const DEFAULT_MAX_PIXELS = 2048 * 2048;
const WEBUI_DEFAULT_SIZE = 512;
const ROOT = "parameters";

// ---------------------------------------------------------------------------------------------
// Tolerant JSON (Python's json.dumps writes NaN, Infinity, -Infinity as bare literals)

/**
 * JSON.parse that also accepts the bare literals `NaN`, `Infinity` and `-Infinity` outside strings,
 * as Python's json.dumps writes them. Anything else that is not JSON is refused (BAD_INPUT).
 */
export function parseWebUiJson(text: string): unknown {
  // A per-call random marker: a client cannot forge a string that turns into a number.
  const marker = `\u0000nonfinite-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}:`;
  const markerJson = JSON.stringify(marker).slice(1, -1);
  let out = "";
  let last = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      let j = i + 1;
      for (;;) {
        j = text.indexOf('"', j);
        if (j < 0) return plainParse(text); // unterminated string: let JSON.parse report it
        let k = j - 1;
        while (text.charCodeAt(k) === 92 /* \ */) k--;
        if ((j - 1 - k) % 2 === 0) break; // an even run of backslashes: the quote ends the string
        j++;
      }
      i = j + 1;
      continue;
    }
    const literal =
      c === 78 && text.startsWith("NaN", i) ? "NaN" : c === 73 && text.startsWith("Infinity", i) ? "Infinity" : c === 45 && text.startsWith("-Infinity", i) ? "-Infinity" : undefined;
    if (literal) {
      out += `${text.slice(last, i)}"${markerJson}${literal}"`;
      i += literal.length;
      last = i;
      continue;
    }
    i++;
  }
  if (last === 0) return plainParse(text);
  out += text.slice(last);
  try {
    return JSON.parse(out, (key: string, v: unknown) => {
      if (key.startsWith(marker)) throw new SyntaxError(`${key.slice(marker.length)} cannot be an object key`);
      return typeof v === "string" && v.startsWith(marker) ? Number(v.slice(marker.length)) : v;
    });
  } catch (e) {
    const message = (e as Error).message.split(markerJson).join("").split(marker).join("");
    throw DomainError.badInput(`not valid JSON: ${message}`);
  }
}

function plainParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw DomainError.badInput(`not valid JSON: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Checks

function fail(field: string, message: string): never {
  throw DomainError.badInput(`${field}: ${message}`, field);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "number") return Number.isNaN(v) ? "NaN" : String(v);
  if (typeof v === "string") return v.length > 40 ? `a string (${v.length} characters)` : JSON.stringify(v);
  return `a ${typeof v}`;
}

/** The field's value, or undefined when absent or null (the WebUI's "use the default"). */
function present(params: Record<string, unknown>, key: string): unknown {
  const v = Object.hasOwn(params, key) ? params[key] : undefined;
  return v === null ? undefined : v;
}

function checkString(params: Record<string, unknown>, key: string): string | undefined {
  const v = present(params, key);
  if (v === undefined) return undefined;
  if (typeof v !== "string") fail(`${ROOT}.${key}`, `must be a string, got ${describe(v)}`);
  return v;
}

function checkInteger(params: Record<string, unknown>, key: string, min: number, max: number, extra?: (v: number) => string | undefined): number | undefined {
  const v = present(params, key);
  if (v === undefined) return undefined;
  const field = `${ROOT}.${key}`;
  if (typeof v !== "number" || !Number.isInteger(v)) fail(field, `must be an integer, got ${describe(v)}`);
  if (v < min || v > max) fail(field, `must be between ${min} and ${max}, got ${v}`);
  const problem = extra?.(v);
  if (problem) fail(field, problem);
  return v;
}

function checkNumber(params: Record<string, unknown>, key: string, min: number, max: number, minExclusive = false): number | undefined {
  const v = present(params, key);
  if (v === undefined) return undefined;
  const field = `${ROOT}.${key}`;
  if (typeof v !== "number" || !Number.isFinite(v)) fail(field, `must be a finite number, got ${describe(v)}`);
  if ((minExclusive ? v <= min : v < min) || v > max) fail(field, `must be ${minExclusive ? "greater than" : "at least"} ${min} and at most ${max}, got ${v}`);
  return v;
}

function checkSeed(params: Record<string, unknown>, key: string): number | undefined {
  const v = present(params, key);
  if (v === undefined) return undefined;
  const field = `${ROOT}.${key}`;
  if (typeof v !== "number" || !Number.isSafeInteger(v)) fail(field, `must be an integer (-1 for a random seed), got ${describe(v)}`);
  if (v < -1) fail(field, `must be -1 (random) or a non-negative integer, got ${v}`);
  return v;
}

function checkSampler(params: Record<string, unknown>, key: string): string | undefined {
  const v = checkString(params, key);
  if (v === "") return undefined; // the WebUI falls back (sampler_name || sampler_index || default)
  if (v === undefined || SAMPLER_SET.has(v)) return v;
  const suggestion = closestSampler(v);
  fail(`${ROOT}.${key}`, `unknown sampler ${JSON.stringify(v)}${suggestion ? `; did you mean ${JSON.stringify(suggestion)}?` : ""} (names are case-sensitive)`);
}

/** The known sampler nearest to `name` (case-insensitive edit distance), if reasonably near. */
export function closestSampler(name: string): KnownSampler | undefined {
  const wanted = name.trim().toLowerCase();
  let best: KnownSampler | undefined;
  let bestDistance = Infinity;
  for (const s of KNOWN_SAMPLERS) {
    const d = editDistance(wanted, s.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = s;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(wanted.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  if (a.length > 64) return Infinity;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
    }
    prev = cur;
  }
  return prev[b.length]!;
}

// ---------------------------------------------------------------------------------------------
// Base64 images

const DATA_URL_PREFIX = /^data:image\/[A-Za-z0-9.+-]+;base64,/;
const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;
const B64_VALUES = (() => {
  const table = new Int8Array(128).fill(-1);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (let i = 0; i < alphabet.length; i++) table[alphabet.charCodeAt(i)] = i;
  return table;
})();

/** Decodes the first bytes of a (valid) base64 body: `chars` characters, a multiple of 4. */
function decodeHead(body: string, chars: number): number[] {
  const bytes: number[] = [];
  for (let i = 0; i + 4 <= Math.min(chars, body.length); i += 4) {
    const q = [0, 1, 2, 3].map((k) => body.charCodeAt(i + k));
    const v = q.map((c) => (c === 61 /* = */ ? 0 : B64_VALUES[c]!));
    const n = (v[0]! << 18) | (v[1]! << 12) | (v[2]! << 6) | v[3]!;
    bytes.push((n >> 16) & 0xff);
    if (q[2] !== 61) bytes.push((n >> 8) & 0xff);
    if (q[3] !== 61) bytes.push(n & 0xff);
  }
  return bytes;
}

function imageKind(head: number[]): "png" | "jpeg" | "webp" | undefined {
  const at = (i: number) => head[i] ?? -1;
  const ascii = (from: number, s: string) => [...s].every((ch, k) => at(from + k) === ch.charCodeAt(0));
  if ([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a].every((b, k) => at(k) === b)) return "png";
  if (at(0) === 0xff && at(1) === 0xd8 && at(2) === 0xff) return "jpeg";
  if (ascii(0, "RIFF") && ascii(8, "WEBP")) return "webp";
  return undefined;
}

/**
 * Checks a base64 image (optionally a `data:image/...;base64,` URL) cheaply: the alphabet and
 * length of the whole text, and the PNG/JPEG/WebP signature of its first decoded bytes only.
 */
export function checkBase64Image(value: unknown, field: string): void {
  if (typeof value !== "string") fail(field, `must be a base64-encoded image (string), got ${describe(value)}`);
  let body = value;
  if (value.startsWith("data:")) {
    const prefix = DATA_URL_PREFIX.exec(value);
    if (!prefix) fail(field, "a data URL must look like data:image/<type>;base64,<data>");
    body = value.slice(prefix[0].length);
  } else if (/^https?:\/\//i.test(value)) {
    fail(field, "must be a base64-encoded image, not a URL");
  }
  if (body.length === 0) fail(field, "must be a base64-encoded image, got an empty string");
  if (!BASE64_BODY.test(body)) {
    const bad = body.search(/[^A-Za-z0-9+/=]/);
    fail(field, bad >= 0 ? `is not base64: unexpected character ${JSON.stringify(body[bad])} at offset ${bad}` : "is not base64: '=' padding may only end the data");
  }
  if (body.length % 4 !== 0) fail(field, `is not base64: length ${body.length} is not a multiple of 4 (truncated or missing padding)`);
  if (!imageKind(decodeHead(body, 16))) fail(field, "is not a PNG, JPEG or WebP image (unrecognised file signature)");
}

function checkRequiredImage(params: Record<string, unknown>, key: string): void {
  const v = present(params, key);
  if (v === undefined) fail(`${ROOT}.${key}`, "is required (a base64-encoded image)");
  checkBase64Image(v, `${ROOT}.${key}`);
}

// ---------------------------------------------------------------------------------------------
// Per task

/**
 * Validates the WebUI parameters whose meaning is known for `task` and returns the same object,
 * unchanged (unknown and extension fields pass through untouched), with a summary of what it asks.
 * Throws DomainError BAD_INPUT naming the offending field (`parameters.width`, `parameters.init_images.0`, …).
 */
export function checkWebUiParameters(task: InferenceTaskType, params: unknown, options: WebUiCheckOptions = {}): WebUiCheckResult {
  if (!(INFERENCE_TASK_TYPES as readonly string[]).includes(task)) throw DomainError.badInput(`task: unknown task type ${JSON.stringify(task)}; expected one of ${INFERENCE_TASK_TYPES.join(", ")}`, "task");
  if (!isObject(params)) fail(ROOT, `must be an object, got ${describe(params)}`);
  const maxImages = options.maxImages ?? DEFAULT_MAX_IMAGES;
  const maxPixels = options.maxPixels ?? DEFAULT_MAX_PIXELS;

  const alwayson = present(params, "alwayson_scripts");
  if (alwayson !== undefined && !isObject(alwayson)) fail(`${ROOT}.alwayson_scripts`, `must be an object, got ${describe(alwayson)}`);

  switch (task) {
    case "txt2img":
    case "img2img":
      return { params, summary: checkGeneration(task, params, maxImages, maxPixels) };
    case "extra-single-image":
      checkRequiredImage(params, "image");
      checkNumber(params, "upscaling_resize", 0, 8, true);
      return { params, summary: { images: 1 } };
    case "extra-batch-images": {
      checkNumber(params, "upscaling_resize", 0, 8, true);
      const list = present(params, "imageList");
      const field = `${ROOT}.imageList`;
      if (list === undefined) fail(field, "is required (an array of { data, name })");
      if (!Array.isArray(list)) fail(field, `must be an array of { data, name }, got ${describe(list)}`);
      if (list.length === 0) fail(field, "must hold at least one image");
      if (list.length > maxImages) fail(field, `holds ${list.length} images; at most ${maxImages} per request`);
      list.forEach((item: unknown, i) => {
        if (!isObject(item)) fail(`${field}.${i}`, `must be an object { data, name }, got ${describe(item)}`);
        checkBase64Image(item["data"], `${field}.${i}.data`);
        if (typeof item["name"] !== "string") fail(`${field}.${i}.name`, `must be a string, got ${describe(item["name"])}`);
      });
      return { params, summary: { images: list.length } };
    }
    case "rembg":
      checkRequiredImage(params, "input_image");
      checkString(params, "model");
      return { params, summary: { images: 1 } };
  }
}

function checkGeneration(task: "txt2img" | "img2img", params: Record<string, unknown>, maxImages: number, maxPixels: number): WebUiSummary {
  checkString(params, "prompt"); // empty prompts are fine, as in the WebUI
  checkString(params, "negative_prompt");
  const multipleOf8 = (v: number) => (v % 8 === 0 ? undefined : `must be a multiple of 8, got ${v}`);
  const width = checkInteger(params, "width", 64, 2048, multipleOf8);
  const height = checkInteger(params, "height", 64, 2048, multipleOf8);
  const pixels = (width ?? WEBUI_DEFAULT_SIZE) * (height ?? WEBUI_DEFAULT_SIZE);
  if (pixels > maxPixels) fail(`${ROOT}.${width !== undefined ? "width" : "height"}`, `width × height is ${pixels} pixels; at most ${maxPixels}`);
  const steps = checkInteger(params, "steps", 1, 150);
  checkNumber(params, "cfg_scale", 1, 30);
  const samplerName = checkSampler(params, "sampler_name");
  const samplerIndex = checkSampler(params, "sampler_index");
  const batchSize = checkInteger(params, "batch_size", 1, 8);
  const nIter = checkInteger(params, "n_iter", 1, 100);
  const images = (batchSize ?? 1) * (nIter ?? 1);
  if (images > maxImages) fail(`${ROOT}.${nIter !== undefined ? "n_iter" : "batch_size"}`, `batch_size × n_iter is ${images} images; at most ${maxImages} per request`);
  const seed = checkSeed(params, "seed");
  // img2img strength; for txt2img the WebUI uses it for the hires-fix pass, same range.
  checkNumber(params, "denoising_strength", 0, 1);

  if (task === "img2img") {
    const initImages = present(params, "init_images");
    const field = `${ROOT}.init_images`;
    if (initImages === undefined) fail(field, "is required for img2img (a non-empty array of base64-encoded images)");
    if (!Array.isArray(initImages)) fail(field, `must be an array of base64-encoded images, got ${describe(initImages)}`);
    if (initImages.length === 0) fail(field, "must hold at least one image");
    initImages.forEach((img: unknown, i) => checkBase64Image(img, `${field}.${i}`));
    const mask = present(params, "mask");
    if (mask !== undefined) checkBase64Image(mask, `${ROOT}.mask`);
  }

  const summary: WebUiSummary = { images };
  if (width !== undefined) summary.width = width;
  if (height !== undefined) summary.height = height;
  if (steps !== undefined) summary.steps = steps;
  if (batchSize !== undefined) summary.batchSize = batchSize;
  if (nIter !== undefined) summary.nIter = nIter;
  if (seed !== undefined) summary.seed = seed;
  const sampler = samplerName ?? samplerIndex;
  if (sampler !== undefined) summary.sampler = sampler;
  return summary;
}
