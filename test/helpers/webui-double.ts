import { createHash } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { deflateSync } from "node:zlib";
import { PNG } from "pngjs";
import sharp from "sharp";

/**
 * A deterministic test double of the AUTOMATIC1111 Stable Diffusion WebUI HTTP API (the same API
 * Forge and SD.Next serve), for driving self-hosted WebUI endpoints in tests.
 *
 * It mirrors the response shapes of the real server for the routes Diffgate uses:
 *
 * - `GET  /sdapi/v1/sd-models`           configured checkpoints
 * - `POST /sdapi/v1/txt2img`, `/img2img` generations, one at a time behind a FIFO queue lock
 * - `GET  /sdapi/v1/progress`            global progress of the running generation
 * - `POST /internal/progress`            per-task progress with live previews
 * - `POST /sdapi/v1/interrupt`           interrupts whatever is running (global, no task id)
 * - `GET|POST /sdapi/v1/options`         the current checkpoint
 * - `POST /sdapi/v1/extra-single-image`, `/extra-batch-images`  "upscaled" images, answered at once
 *   (a real server runs them behind the same lock); the output is a drawn PNG of the requested size
 *   (`resize_mode` 1: `upscaling_resize_w` × `upscaling_resize_h`; else 64 × `upscaling_resize`
 *   square, since the input is not decoded), keyed on the input bytes
 *
 * A generation advances `sampling_step` by one every `stepMs` milliseconds (through setImmediate
 * when `stepMs` is 0, so the event loop is never blocked) for each of its `n_iter` iterations, and
 * answers with `batch_size * n_iter` PNGs. The pictures are not rendered from the prompt: each is a
 * background colour and a few bands derived from a hash of (seed, prompt, image index), so equal
 * requests give equal bytes. Everything the server is asked is recorded for assertions, and the
 * control methods simulate a dead server (`stop`), a restarted one (`restart`) and a crash in the
 * middle of a generation (`crashDuringNextJob`).
 */

/** How the double is set up. */
export interface WebUiDoubleOptions {
  /** Milliseconds between two sampling steps; 0 advances on setImmediate. Default 20. */
  stepMs?: number;
  /** A live preview is produced every this many sampling steps; 0 or less disables previews. Default 2. */
  previewEvery?: number;
  /** The live previews' format, as the server's `live_previews_image_format` (Forge defaults to jpeg). Default png. */
  previewFormat?: "png" | "jpeg" | "webp";
  /** Live previews are this many pixels on a side. Default 64. */
  previewSide?: number;
  /** Checkpoint file names (relative to the model folder), the first being the loaded one. Default `["v1-5-pruned-emaonly.safetensors"]`. */
  models?: string[];
  /** When set, every request must carry these HTTP basic credentials (like `--api-auth user:pass`). */
  auth?: { username: string; password: string };
  /** Port to listen on (127.0.0.1); 0, the default, takes a free one. */
  port?: number;
}

/** One request the double received, in arrival order. */
export interface RecordedRequest {
  method: string;
  /** The path without its query string. */
  path: string;
  /** The query string with its leading "?", or "" when there is none. */
  query: string;
  /** The parsed JSON body; the raw text when it is not JSON; undefined when there is no body. */
  body: unknown;
  /** Date.now() when the request's body had been read. */
  at: number;
  /** The Authorization header as sent, when there was one. */
  authorization?: string;
}

/** A running double and its controls. */
export interface WebUiDouble {
  /** `http://127.0.0.1:<port>`; the same across stop() and restart(). */
  url: string;
  /** Every request received (kept across restarts). */
  requests: RecordedRequest[];
  /** Every POST /sdapi/v1/interrupt, with the task that was running at that moment (kept across restarts). */
  interrupts: Array<{ at: number; runningTaskId: string | null }>;
  /** Bodies POSTed to /sdapi/v1/options (kept across restarts), so tests can assert it is never called. */
  optionWrites: unknown[];
  /** The task id of the generation running now, or null. */
  runningTaskId(): string | null;
  /** Task ids of finished generations (completed or interrupted), in finishing order; cleared by restart(). */
  completedTasks(): string[];
  /** Stops listening and destroys every open socket: connections are refused and requests in flight fail. */
  stop(): Promise<void>;
  /** Listens again on the same port with the generation state reset to idle (nothing queued, running or completed). */
  restart(): Promise<void>;
  /** The next generation to start destroys its HTTP socket after `afterSteps` sampling steps and the double stops listening. */
  crashDuringNextJob(afterSteps: number): void;
  /** Stops the double for good (same as stop()). */
  close(): Promise<void>;
}

const DEFAULT_MODELS = ["v1-5-pruned-emaonly.safetensors"];
/** Where the double pretends its checkpoints live (the `filename` of /sdapi/v1/sd-models). */
const MODEL_DIR = "/webui/models/Stable-diffusion";
/** Above this many pixels an output image is a solid fill (still at the requested size) to keep encoding cheap. */
const DETAILED_PIXELS_MAX = 1024 * 1024;
/** Bodies larger than this are refused with 413. */
const MAX_BODY_BYTES = 256 * 1024 * 1024;
/** The version string the info carries, as a recent A1111 release reports it. */
const WEBUI_VERSION = "v1.10.1";

// ---------------------------------------------------------------------------------------------
// Models

/** An entry of GET /sdapi/v1/sd-models. */
interface ModelEntry {
  title: string;
  model_name: string;
  hash: string;
  sha256: string;
  filename: string;
  config: null;
}

/**
 * The listing entry of a checkpoint file, shaped as A1111's CheckpointInfo: the title is the
 * relative name with the short hash, model_name the name without extension and with path
 * separators flattened. The "file hash" is derived from the name, so it is stable across runs.
 */
function modelEntry(name: string): ModelEntry {
  const sha256 = createHash("sha256").update(`checkpoint:${name}`).digest("hex");
  const hash = sha256.slice(0, 10);
  return {
    title: `${name} [${hash}]`,
    model_name: name.replace(/[\\/]/g, "_").replace(/\.[^.]*$/, ""),
    hash,
    sha256,
    filename: `${MODEL_DIR}/${name}`,
    config: null,
  };
}

/** The checkpoint a name refers to: its title, relative name, model name, file name or hash, as A1111's checkpoint aliases accept. */
function findModel(models: ModelEntry[], name: string): ModelEntry | undefined {
  return models.find(
    (m) => name === m.title || name === m.model_name || name === m.filename || name === m.hash || name === m.sha256 || name === m.title.replace(/ \[[0-9a-f]+\]$/, ""),
  );
}

// ---------------------------------------------------------------------------------------------
// Images

type Rgb = [number, number, number];

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, "latin1");
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])));
  return Buffer.concat([head, data, crc]);
}

/**
 * A solid-colour PNG of any size, cheaply: one-bit palette pixels (all index 0), so the scanlines
 * are zeros that deflate to almost nothing and no RGBA buffer of the full size is ever allocated.
 */
function solidPng(width: number, height: number, color: Rgb): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 3; // colour type: palette
  const scanlines = Buffer.alloc((1 + Math.ceil(width / 8)) * height); // filter byte 0 and index 0 everywhere
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("PLTE", Buffer.from(color)),
    pngChunk("IDAT", deflateSync(scanlines, { level: 1 })),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

const BANDS = 4;

/**
 * The picture for `key`: a background colour and BANDS horizontal bands plus one vertical stripe,
 * all derived from sha256(key). `completion` (0..1) is how far sampling got: only that share of
 * the bands is drawn, so a partial (interrupted) image or a live preview differs from the final one
 * for the same key. Over DETAILED_PIXELS_MAX pixels the picture is the background alone.
 */
function renderPng(width: number, height: number, key: string, completion: number): Buffer {
  const h = createHash("sha256").update(key).digest();
  const background: Rgb = [h[0]!, h[1]!, h[2]!];
  if (width * height > DETAILED_PIXELS_MAX) return solidPng(width, height, background);

  const png = new PNG({ width, height });
  const data = png.data;
  const paintRow = (y: number, color: Rgb) => {
    const start = y * width * 4;
    for (let x = 0; x < width; x++) {
      const o = start + x * 4;
      data[o] = color[0];
      data[o + 1] = color[1];
      data[o + 2] = color[2];
      data[o + 3] = 255;
    }
  };
  // Rows 2i+1 of 2*BANDS+1 equal slices carry band i; the others keep the background.
  const drawnBands = Math.round(Math.min(1, Math.max(0, completion)) * BANDS);
  const bandColors: Rgb[] = Array.from({ length: BANDS }, (_, i) => [h[3 + 3 * i]!, h[4 + 3 * i]!, h[5 + 3 * i]!]);
  const slices = 2 * BANDS + 1;
  for (let y = 0; y < height; y++) {
    const slice = Math.floor((y * slices) / height);
    const band = (slice - 1) / 2;
    paintRow(y, slice % 2 === 1 && band < drawnBands ? bandColors[band]! : background);
  }
  // A vertical stripe in the complementary colour, placed by the hash, across the whole height.
  const stripeWidth = Math.max(1, Math.floor(width / 16));
  const stripeX = h.readUInt16BE(16) % Math.max(1, width - stripeWidth + 1);
  const stripe: Rgb = [255 - background[0], 255 - background[1], 255 - background[2]];
  for (let y = 0; y < height; y++) {
    for (let x = stripeX; x < stripeX + stripeWidth; x++) {
      const o = (y * width + x) * 4;
      data[o] = stripe[0];
      data[o + 1] = stripe[1];
      data[o + 2] = stripe[2];
    }
  }
  return PNG.sync.write(png, { colorType: 2, inputHasAlpha: true, deflateLevel: 6 });
}

/** The hash key of output image `n` of a generation: its own seed, the prompt and its index. */
function imageKey(seed: number, prompt: string, n: number): string {
  return `${seed}\u0000${prompt}\u0000${n}`;
}

// ---------------------------------------------------------------------------------------------
// Request validation (FastAPI / pydantic style errors)

/** A refusal with its HTTP status and JSON body. */
class HttpFailure extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(`HTTP ${status}`);
  }
}

/** A 422 in FastAPI's request-validation shape: `{detail: [{loc, msg, type}]}`. */
function invalid(field: string, msg: string, type: string): HttpFailure {
  return new HttpFailure(422, { detail: [{ loc: ["body", field], msg, type }] });
}

function intField(body: Record<string, unknown>, name: string, fallback: number, min: number, max: number): number {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isInteger(v)) throw invalid(name, "value is not a valid integer", "type_error.integer");
  if (v < min) throw invalid(name, `ensure this value is greater than or equal to ${min}`, "value_error.number.not_ge");
  if (v > max) throw invalid(name, `ensure this value is less than or equal to ${max}`, "value_error.number.not_le");
  return v;
}

function numberField(body: Record<string, unknown>, name: string, fallback: number): number {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) throw invalid(name, "value is not a valid float", "type_error.float");
  return v;
}

function stringField(body: Record<string, unknown>, name: string, fallback: string): string {
  const v = body[name];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "string") throw invalid(name, "str type expected", "type_error.str");
  return v;
}

const IMAGE_SIGNATURES: Array<(b: Buffer) => boolean> = [
  (b) => b.length >= 8 && b.readUInt32BE(0) === 0x89504e47 && b.readUInt32BE(4) === 0x0d0a1a0a, // PNG
  (b) => b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff, // JPEG
  (b) => b.length >= 12 && b.toString("latin1", 0, 4) === "RIFF" && b.toString("latin1", 8, 12) === "WEBP", // WebP
  (b) => b.length >= 6 && /^GIF8[79]a$/.test(b.toString("latin1", 0, 6)), // GIF
  (b) => b.length >= 2 && b.toString("latin1", 0, 2) === "BM", // BMP
];

/**
 * Checks img2img's init_images as A1111's decode_base64_to_image would: a list of base64 images,
 * optionally as data URLs. A missing or empty list is a validation error; an entry that is not
 * base64 of a known image format is refused as "Invalid encoded image" (A1111 answers that one
 * with its `{error, detail, body, errors}` exception shape).
 */
function checkInitImages(v: unknown): void {
  if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) throw invalid("init_images", "field required", "value_error.missing");
  if (!Array.isArray(v)) throw invalid("init_images", "value is not a valid list", "type_error.list");
  for (const entry of v) {
    let ok = false;
    if (typeof entry === "string") {
      const text = entry.replace(/^data:image\/[a-z0-9.+-]+;base64,/i, "").replace(/\s+/g, "");
      if (text.length > 0 && text.length % 4 === 0 && /^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
        const bytes = Buffer.from(text, "base64");
        ok = IMAGE_SIGNATURES.some((is) => is(bytes));
      }
    }
    if (!ok) throw new HttpFailure(422, { error: "HTTPException", detail: "Invalid encoded image", body: "", errors: "" });
  }
}

// ---------------------------------------------------------------------------------------------
// Generations

type JobKind = "txt2img" | "img2img";

/** The parameters a generation runs with, after defaults and seed resolution. */
interface GenerationParams {
  prompt: string;
  negativePrompt: string;
  steps: number;
  width: number;
  height: number;
  seed: number;
  subseed: number;
  batchSize: number;
  nIter: number;
  samplerName: string;
  cfgScale: number;
  modelName: string | null;
  modelHash: string | null;
  denoisingStrength: number | null;
}

/** How a queued or running generation ended: with images, or torn down by stop()/a crash. */
type JobOutcome = { kind: "done"; images: string[]; interrupted: boolean; jobTimestamp: string } | { kind: "aborted" };

interface Job {
  taskId: string;
  kind: JobKind;
  params: GenerationParams;
  /** The request's response, whose socket a crash destroys. */
  res: ServerResponse;
  settle: (outcome: JobOutcome) => void;
}

/** The running generation, in the terms of A1111's shared.state. */
interface Run {
  job: Job;
  /** Iterations (of n_iter) finished so far. */
  jobNo: number;
  /** Sampling step within the current iteration, 0..steps. */
  samplingStep: number;
  /** Sampling steps taken across all iterations (what crashDuringNextJob counts). */
  stepsDone: number;
  /** Increments with every new live preview; 0 before the first one. */
  idLivePreview: number;
  /** The latest live preview (a previewSide² PNG), or null before the first. */
  preview: Buffer | null;
  timeStart: number;
  jobTimestamp: string;
  /** Base64 PNGs of the iterations finished so far. */
  images: string[];
  /** Set by crashDuringNextJob: crash once this many steps have been taken. */
  crashAfter: number | null;
  /** Cancels the pending step, when one is scheduled. */
  cancel: (() => void) | null;
}

/** `YYYYMMDDhhmmss` in local time, like A1111's job_timestamp. */
function jobTimestamp(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** A seed derived from the task id, standing in for A1111's random seed when -1 is asked for. */
function derivedSeed(taskId: string, what: string): number {
  return createHash("sha256").update(`${what}:${taskId}`).digest().readUInt32BE(0) % 4294967294;
}

/** The A1111 infotext of one image ("parameters" of its PNG info). */
function infotext(p: GenerationParams, seed: number): string {
  const fields = [
    `Steps: ${p.steps}`,
    `Sampler: ${p.samplerName}`,
    `CFG scale: ${p.cfgScale}`,
    `Seed: ${seed}`,
    `Size: ${p.width}x${p.height}`,
    ...(p.modelHash ? [`Model hash: ${p.modelHash}`] : []),
    ...(p.modelName ? [`Model: ${p.modelName}`] : []),
    ...(p.denoisingStrength !== null ? [`Denoising strength: ${p.denoisingStrength}`] : []),
    `Version: ${WEBUI_VERSION}`,
  ];
  return `${p.prompt}\n${p.negativePrompt ? `Negative prompt: ${p.negativePrompt}\n` : ""}${fields.join(", ")}`;
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.destroyed || res.writableEnded) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(new HttpFailure(413, { detail: "Request Entity Too Large" }));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function listen(server: http.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Routes and the methods they accept (another method answers 405, an unknown path 404). */
const ROUTES: Record<string, string[]> = {
  "/sdapi/v1/sd-models": ["GET"],
  "/sdapi/v1/txt2img": ["POST"],
  "/sdapi/v1/img2img": ["POST"],
  "/sdapi/v1/progress": ["GET"],
  "/sdapi/v1/interrupt": ["POST"],
  "/sdapi/v1/options": ["GET", "POST"],
  "/sdapi/v1/extra-single-image": ["POST"],
  "/sdapi/v1/extra-batch-images": ["POST"],
  "/internal/progress": ["POST"],
};

/** The "upscaled" image of an extras request for one input (see the header for its size). */
function extrasImage(body: Record<string, unknown>, input: string): string {
  const byMode = intField(body, "resize_mode", 0, 0, 1);
  const width = byMode === 1 ? intField(body, "upscaling_resize_w", 512, 1, 8192) : Math.round(64 * numberField(body, "upscaling_resize", 2));
  const height = byMode === 1 ? intField(body, "upscaling_resize_h", 512, 1, 8192) : width;
  return renderPng(width, height, createHash("sha256").update(input).digest("hex"), 1).toString("base64");
}

// ---------------------------------------------------------------------------------------------
// The double

/** Starts a WebUI double listening on 127.0.0.1 (a free port unless `options.port` is given). */
export async function startWebUiDouble(options: WebUiDoubleOptions = {}): Promise<WebUiDouble> {
  const stepMs = Math.max(0, options.stepMs ?? 20);
  const previewEvery = options.previewEvery ?? 2;
  const previewSide = options.previewSide ?? 64;
  const previewFormat = options.previewFormat ?? "png";
  /** The latest preview in `previewFormat`, encoded once per preview id. */
  let encodedPreview: { id: number; run: Run; bytes: Buffer } | null = null;
  /** The run's latest preview and its id (taken together, before any await). */
  async function latestPreview(run: Run): Promise<{ id: number; bytes: Buffer }> {
    const id = run.idLivePreview;
    const png = run.preview!;
    if (previewFormat === "png") return { id, bytes: png };
    if (encodedPreview?.run !== run || encodedPreview.id !== id) encodedPreview = { id, run, bytes: await sharp(png)[previewFormat]({ quality: 80 }).toBuffer() };
    return { id, bytes: encodedPreview.bytes };
  }
  const models = (options.models ?? DEFAULT_MODELS).map(modelEntry);
  const expectedAuthorization = options.auth
    ? `Basic ${Buffer.from(`${options.auth.username}:${options.auth.password}`).toString("base64")}`
    : undefined;

  const requests: RecordedRequest[] = [];
  const interrupts: WebUiDouble["interrupts"] = [];
  const optionWrites: unknown[] = [];

  // Generation state (reset by restart()).
  let currentModel: ModelEntry | undefined = models[0];
  let queue: Job[] = [];
  let running: Run | null = null;
  let completed: string[] = [];
  let lastJobTimestamp = "0";
  let pendingCrash: number | null = null;
  let taskCounter = 0; // not reset, so task ids stay unique across restarts

  let server: http.Server | null = null;
  /** Resolves when the last stopped server has closed (a crash stops it without anyone awaiting). */
  let closing: Promise<void> = Promise.resolve();
  const sockets = new Set<Socket>();

  /** Runs `fn` after one step: stepMs later, or on the next turn of the event loop when stepMs is 0. */
  function schedule(fn: () => void): () => void {
    if (stepMs > 0) {
      const t = setTimeout(fn, stepMs);
      return () => clearTimeout(t);
    }
    const i = setImmediate(fn);
    return () => clearImmediate(i);
  }

  /** The base64 PNGs of the current iteration's batch, sampled to `completion`. */
  function renderBatch(run: Run, completion: number): string[] {
    const p = run.job.params;
    const out: string[] = [];
    for (let b = 0; b < p.batchSize; b++) {
      const n = run.jobNo * p.batchSize + b;
      out.push(renderPng(p.width, p.height, imageKey(p.seed + n, p.prompt, n), completion).toString("base64"));
    }
    return out;
  }

  /** Starts the next queued generation when nothing runs (the queue lock). */
  function pump(): void {
    if (running || !server) return;
    const job = queue.shift();
    if (!job) return;
    const now = new Date();
    const run: Run = {
      job,
      jobNo: 0,
      samplingStep: 0,
      stepsDone: 0,
      idLivePreview: 0,
      preview: null,
      timeStart: now.getTime(),
      jobTimestamp: jobTimestamp(now),
      images: [],
      crashAfter: pendingCrash,
      cancel: null,
    };
    pendingCrash = null;
    running = run;
    run.cancel = schedule(() => (run.crashAfter === 0 ? crash(run) : step(run)));
  }

  /** One sampling step of the running generation. */
  function step(run: Run): void {
    if (running !== run) return;
    run.cancel = null;
    const p = run.job.params;
    run.samplingStep += 1;
    run.stepsDone += 1;
    if (previewEvery > 0 && run.samplingStep % previewEvery === 0) {
      const n = run.jobNo * p.batchSize;
      run.preview = renderPng(previewSide, previewSide, imageKey(p.seed + n, p.prompt, n), run.samplingStep / p.steps);
      run.idLivePreview += 1;
    }
    if (run.crashAfter !== null && run.stepsDone >= run.crashAfter) {
      crash(run);
      return;
    }
    if (run.samplingStep >= p.steps) {
      run.images.push(...renderBatch(run, 1));
      run.jobNo += 1;
      if (run.jobNo >= p.nIter) {
        finish(run, false);
        return;
      }
      run.samplingStep = 0;
    }
    run.cancel = schedule(() => step(run));
  }

  function finish(run: Run, interrupted: boolean): void {
    running = null;
    completed.push(run.job.taskId);
    lastJobTimestamp = run.jobTimestamp;
    run.job.settle({ kind: "done", images: run.images, interrupted, jobTimestamp: run.jobTimestamp });
    pump();
  }

  /** The server dies mid-generation: the request's socket is destroyed and the double stops listening. */
  function crash(run: Run): void {
    if (running !== run) return;
    run.job.res.socket?.destroy();
    void stop();
  }

  /** Interrupts the running generation: it stops sampling and answers with what it has, the current batch partially sampled. */
  function interrupt(): void {
    const run = running;
    interrupts.push({ at: Date.now(), runningTaskId: run?.job.taskId ?? null });
    if (!run) return;
    run.cancel?.();
    run.cancel = null;
    const p = run.job.params;
    // A1111 decodes the half-denoised latents of the batch in progress; between two iterations there is none.
    if (run.jobNo < p.nIter && (run.samplingStep > 0 || run.jobNo === 0)) run.images.push(...renderBatch(run, run.samplingStep / p.steps));
    finish(run, true);
  }

  async function stop(): Promise<void> {
    const s = server;
    server = null;
    const run = running;
    running = null;
    run?.cancel?.();
    const abandoned = [...(run ? [run.job] : []), ...queue];
    queue = [];
    for (const job of abandoned) job.settle({ kind: "aborted" });
    if (s) {
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      sockets.clear();
      closing = closed;
    }
    await closing;
  }

  async function start(port: number): Promise<number> {
    const s = http.createServer((req, res) => void handle(req, res));
    s.on("connection", (socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
    });
    const bound = await listen(s, port);
    server = s;
    return bound;
  }

  // --- request handling ---

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? "/", "http://webui");
      const method = req.method ?? "GET";
      const raw = await readBody(req);
      let body: unknown = undefined;
      let badJson: string | null = null;
      if (raw.length > 0) {
        const text = raw.toString("utf8");
        try {
          body = JSON.parse(text);
        } catch (e) {
          body = text;
          badJson = (e as Error).message;
        }
      }
      const authorization = req.headers.authorization;
      requests.push({ method, path: url.pathname, query: url.search, body, at: Date.now(), ...(authorization !== undefined ? { authorization } : {}) });

      if (expectedAuthorization && authorization !== expectedAuthorization) {
        sendJson(res, 401, { detail: "Not authenticated" }, { "www-authenticate": "Basic" });
        return;
      }
      const methods = ROUTES[url.pathname];
      if (!methods) throw new HttpFailure(404, { detail: "Not Found" });
      if (!methods.includes(method)) throw new HttpFailure(405, { detail: "Method Not Allowed" });
      if (badJson !== null) throw new HttpFailure(422, { detail: [{ loc: ["body", 0], msg: `JSON decode error: ${badJson}`, type: "value_error.jsondecode" }] });
      const needsObject = method === "POST" && url.pathname !== "/sdapi/v1/interrupt";
      if (needsObject && (body === null || typeof body !== "object" || Array.isArray(body))) {
        throw new HttpFailure(422, { detail: [{ loc: ["body"], msg: "value is not a valid dict", type: "type_error.dict" }] });
      }
      const fields = (body ?? {}) as Record<string, unknown>;

      switch (`${method} ${url.pathname}`) {
        case "GET /sdapi/v1/sd-models":
          return sendJson(res, 200, models);
        case "POST /sdapi/v1/txt2img":
          return await generate("txt2img", fields, res, req);
        case "POST /sdapi/v1/img2img":
          return await generate("img2img", fields, res, req);
        case "GET /sdapi/v1/progress":
          return sendJson(res, 200, globalProgress(url.searchParams.get("skip_current_image") === "true"));
        case "POST /internal/progress":
          return sendJson(res, 200, await taskProgress(fields));
        case "POST /sdapi/v1/interrupt":
          interrupt();
          return sendJson(res, 200, {});
        case "GET /sdapi/v1/options":
          return sendJson(res, 200, { sd_model_checkpoint: currentModel?.title ?? null });
        case "POST /sdapi/v1/options":
          return setOptions(fields, res);
        case "POST /sdapi/v1/extra-single-image": {
          checkInitImages([fields.image]);
          return sendJson(res, 200, { html_info: "<p>upscaled by the WebUI double</p>", image: extrasImage(fields, String(fields.image)) });
        }
        case "POST /sdapi/v1/extra-batch-images": {
          const list = fields.imageList;
          if (!Array.isArray(list) || list.length === 0) throw invalid("imageList", "field required", "value_error.missing");
          const inputs = list.map((e) => (e as { data?: unknown } | null)?.data);
          checkInitImages(inputs);
          return sendJson(res, 200, { html_info: "<p>upscaled by the WebUI double</p>", images: inputs.map((d) => extrasImage(fields, String(d))) });
        }
      }
    } catch (e) {
      if (e instanceof HttpFailure) return sendJson(res, e.status, e.body);
      sendJson(res, 500, { error: (e as Error).name ?? "Error", detail: "", body: "", errors: String((e as Error).message ?? e) });
    }
  }

  /** POST /sdapi/v1/options: records the body; sd_model_checkpoint must name a configured model (A1111 raises otherwise). */
  function setOptions(fields: Record<string, unknown>, res: ServerResponse): void {
    optionWrites.push(fields);
    const wanted = fields.sd_model_checkpoint;
    if (wanted !== undefined && wanted !== null) {
      const model = typeof wanted === "string" ? findModel(models, wanted) : undefined;
      if (!model) {
        sendJson(res, 500, { error: "RuntimeError", detail: "", body: "", errors: `model ${JSON.stringify(wanted)} not found` });
        return;
      }
      currentModel = model;
    }
    sendJson(res, 200, null);
  }

  /** Validates a txt2img/img2img body, queues it behind the lock and answers when it has run. */
  async function generate(kind: JobKind, body: Record<string, unknown>, res: ServerResponse, req: IncomingMessage): Promise<void> {
    const prompt = stringField(body, "prompt", "");
    const negativePrompt = stringField(body, "negative_prompt", "");
    const steps = intField(body, "steps", 20, 1, 10_000);
    const width = intField(body, "width", 512, 1, 8192);
    const height = intField(body, "height", 512, 1, 8192);
    const seedAsked = intField(body, "seed", -1, -1, Number.MAX_SAFE_INTEGER);
    const subseedAsked = intField(body, "subseed", -1, -1, Number.MAX_SAFE_INTEGER);
    const batchSize = intField(body, "batch_size", 1, 1, 100);
    const nIter = intField(body, "n_iter", 1, 1, 100);
    const samplerName = stringField(body, "sampler_name", "Euler a") || "Euler a";
    const cfgScale = numberField(body, "cfg_scale", 7);
    const forcedTaskId = stringField(body, "force_task_id", "");
    const overrides = body.override_settings;
    if (overrides !== undefined && overrides !== null && (typeof overrides !== "object" || Array.isArray(overrides))) {
      throw invalid("override_settings", "value is not a valid dict", "type_error.dict");
    }
    const checkpoint = (overrides as Record<string, unknown> | null | undefined)?.sd_model_checkpoint;
    let denoisingStrength: number | null = null;
    if (kind === "img2img") {
      checkInitImages(body.init_images);
      denoisingStrength = numberField(body, "denoising_strength", 0.75);
    }

    // The model: the override's when it names one (resolved like A1111's aliases), else the loaded one.
    let modelName = currentModel?.model_name ?? null;
    let modelHash = currentModel?.hash ?? null;
    if (typeof checkpoint === "string" && checkpoint !== "") {
      const model = findModel(models, checkpoint);
      modelName = model?.model_name ?? checkpoint;
      modelHash = model?.hash ?? null;
    }

    taskCounter += 1;
    const taskId = forcedTaskId || `task(${kind}-${String(taskCounter).padStart(7, "0")})`;
    const params: GenerationParams = {
      prompt,
      negativePrompt,
      steps,
      width,
      height,
      seed: seedAsked === -1 ? derivedSeed(taskId, "seed") : seedAsked,
      subseed: subseedAsked === -1 ? derivedSeed(taskId, "subseed") : subseedAsked,
      batchSize,
      nIter,
      samplerName,
      cfgScale,
      modelName,
      modelHash,
      denoisingStrength,
    };

    const outcome = await new Promise<JobOutcome>((settle) => {
      queue.push({ taskId, kind, params, res, settle });
      pump();
    });
    if (outcome.kind === "aborted") {
      req.socket.destroy();
      return;
    }

    const total = batchSize * nIter;
    const allSeeds = Array.from({ length: total }, (_, i) => params.seed + i);
    const info = {
      prompt,
      all_prompts: Array<string>(total).fill(prompt),
      negative_prompt: negativePrompt,
      all_negative_prompts: Array<string>(total).fill(negativePrompt),
      seed: params.seed,
      all_seeds: allSeeds,
      subseed: params.subseed,
      all_subseeds: Array.from({ length: total }, (_, i) => params.subseed + i),
      subseed_strength: 0,
      width,
      height,
      sampler_name: samplerName,
      cfg_scale: cfgScale,
      steps,
      batch_size: batchSize,
      restore_faces: false,
      face_restoration_model: null,
      sd_model_name: modelName,
      sd_model_hash: modelHash,
      sd_vae_name: null,
      sd_vae_hash: null,
      seed_resize_from_w: -1,
      seed_resize_from_h: -1,
      denoising_strength: denoisingStrength,
      extra_generation_params: {},
      index_of_first_image: 0,
      infotexts: outcome.images.map((_, i) => infotext(params, allSeeds[i]!)),
      styles: [],
      job_timestamp: outcome.jobTimestamp,
      clip_skip: 1,
      is_using_inpainting_conditioning: false,
      version: WEBUI_VERSION,
      interrupted: outcome.interrupted,
    };
    // Like A1111, img2img echoes its parameters without the (large) init images unless include_init_images is set.
    const parameters = kind === "img2img" && body.include_init_images !== true ? { ...body, init_images: null, mask: null } : body;
    sendJson(res, 200, { images: outcome.images, parameters, info: JSON.stringify(info) });
  }

  /** A1111's progress share: finished iterations plus the current one's sampled fraction. */
  function progressOf(run: Run): number {
    const p = run.job.params;
    return run.jobNo / p.nIter + run.samplingStep / p.steps / p.nIter;
  }

  /** GET /sdapi/v1/progress: the global state, as A1111's progressapi (0.01 offset included). */
  function globalProgress(skipCurrentImage: boolean) {
    const run = running;
    if (!run) {
      return {
        progress: 0,
        eta_relative: 0,
        state: { skipped: false, interrupted: false, job: "", job_count: 0, job_timestamp: lastJobTimestamp, job_no: 0, sampling_step: 0, sampling_steps: 0 },
        current_image: null,
        textinfo: null,
      };
    }
    const p = run.job.params;
    const progress = 0.01 + progressOf(run);
    const elapsed = (Date.now() - run.timeStart) / 1000;
    return {
      progress: Math.min(progress, 1),
      eta_relative: elapsed / progress - elapsed,
      state: {
        skipped: false,
        interrupted: false,
        job: run.job.kind,
        job_count: p.nIter,
        job_timestamp: run.jobTimestamp,
        job_no: run.jobNo,
        sampling_step: run.samplingStep,
        sampling_steps: p.steps,
      },
      current_image: run.preview && !skipCurrentImage ? run.preview.toString("base64") : null,
      textinfo: null,
    };
  }

  /** POST /internal/progress: one task's progress, as A1111's progress.progressapi. */
  async function taskProgress(fields: Record<string, unknown>) {
    const idTask = typeof fields.id_task === "string" ? fields.id_task : null;
    const askedPreviewId = typeof fields.id_live_preview === "number" ? fields.id_live_preview : -1;
    const wantsPreview = fields.live_preview !== false;
    const run = running;
    const active = run !== null && idTask !== null && run.job.taskId === idTask;
    const queueIndex = idTask === null ? -1 : queue.findIndex((j) => j.taskId === idTask);
    const queued = queueIndex >= 0;
    const isCompleted = idTask !== null && completed.includes(idTask);
    if (!active || !run) {
      return {
        active: false,
        queued,
        completed: isCompleted,
        progress: null,
        eta: null,
        live_preview: null,
        id_live_preview: -1,
        textinfo: queued ? `In queue: ${queueIndex + 1}/${queue.length}` : "Waiting...",
      };
    }
    const progress = Math.min(progressOf(run), 1);
    const elapsed = (Date.now() - run.timeStart) / 1000;
    const fresh = wantsPreview && run.preview !== null && run.idLivePreview !== askedPreviewId;
    const preview = fresh ? await latestPreview(run) : null;
    return {
      active: true,
      queued: false,
      completed: false,
      progress,
      eta: progress > 0 ? elapsed / progress - elapsed : null,
      live_preview: preview ? `data:image/${previewFormat};base64,${preview.bytes.toString("base64")}` : null,
      id_live_preview: preview ? preview.id : askedPreviewId,
      textinfo: null,
    };
  }

  const port = await start(options.port ?? 0);

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    interrupts,
    optionWrites,
    runningTaskId: () => running?.job.taskId ?? null,
    completedTasks: () => [...completed],
    stop,
    async restart() {
      await stop();
      currentModel = models[0];
      completed = [];
      lastJobTimestamp = "0";
      pendingCrash = null;
      await start(port);
    },
    crashDuringNextJob(afterSteps: number) {
      pendingCrash = Math.max(0, Math.floor(afterSteps));
    },
    close: stop,
  };
}
