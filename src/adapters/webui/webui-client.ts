/**
 * The HTTP API of a self-hosted Stable Diffusion WebUI (AUTOMATIC1111, Forge, SD.Next): `/sdapi/v1`
 * for models, generation and interrupts, and `/internal/progress` for one task's progress and live
 * preview. Every call has a deadline; transport failures and refusals are told apart.
 */

export interface WebUiServer {
  /** Base URL without a trailing slash, e.g. `http://gpu-box:7860`. */
  baseUrl: string;
  /** HTTP basic credentials, as the server's `--api-auth user:password`. */
  credentials?: { username: string; password: string } | undefined;
}

/** The server did not answer (refused, reset, DNS, timeout): it may be down. */
export class WebUiUnreachable extends Error {
  constructor(
    readonly baseUrl: string,
    readonly reason: string,
  ) {
    super(`WebUI server ${baseUrl} did not answer (${reason})`);
    this.name = "WebUiUnreachable";
  }
}

/** The server answered with an error status; `detail` is its own words. */
export class WebUiRefused extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
  ) {
    super(`the WebUI server answered ${status}: ${detail}`);
    this.name = "WebUiRefused";
  }
}

/**
 * Where each task runs on a WebUI server: its own API for generations and extras; rembg is the
 * stable-diffusion-webui-rembg extension's route (a server without it answers 404).
 */
export const WEBUI_TASK_PATHS = {
  txt2img: "/sdapi/v1/txt2img",
  img2img: "/sdapi/v1/img2img",
  "extra-single-image": "/sdapi/v1/extra-single-image",
  "extra-batch-images": "/sdapi/v1/extra-batch-images",
  rembg: "/rembg",
} as const;

export interface WebUiGeneration {
  images: unknown[];
  parameters?: unknown;
  info?: unknown;
}

export interface WebUiTaskProgress {
  /** This task is the one the server is running now. */
  active: boolean;
  /** This task waits behind another on the server. */
  queued: boolean;
  completed: boolean;
  /** 0..1, when active. */
  progress: number | null;
  etaSeconds: number | null;
  /** A new live preview (bytes and media type), when the server has one newer than the caller's. */
  livePreview: { bytes: Buffer; mediaType: string } | null;
  livePreviewId: number | null;
}

export interface WebUiSamplingState {
  step: number;
  steps: number;
  /** The server's own job name while it generates ("" when idle). */
  job: string;
}

export interface WebUiModel {
  title: string;
  modelName: string;
  filename: string | null;
}

/** The most telling words of a fetch failure: a system error code, else the innermost message ("bad port"). */
function errorCode(e: unknown): string {
  let err = e as { name?: string; code?: unknown; cause?: unknown; message?: string; errors?: unknown[] } | undefined;
  let message = (e as Error)?.message ?? "unknown error";
  for (let depth = 0; err && depth < 5; depth++) {
    if (err.name === "TimeoutError") return "timed out";
    if (err.name === "AbortError") return "aborted";
    if (typeof err.code === "string" && !err.code.startsWith("UND_ERR_")) return err.code;
    if (typeof err.message === "string" && err.message) message = err.message;
    const inner = Array.isArray(err.errors) && err.errors.length ? err.errors[0] : err.cause;
    if (!inner && typeof err.code === "string") return err.code;
    err = inner as typeof err;
  }
  return message;
}

function detailOf(status: number, text: string): string {
  try {
    const body = JSON.parse(text) as { detail?: unknown; error?: unknown; errors?: unknown };
    const detail = typeof body.detail === "string" ? body.detail : body.detail !== undefined ? JSON.stringify(body.detail) : undefined;
    const error = typeof body.error === "string" ? body.error : undefined;
    const errors = typeof body.errors === "string" ? body.errors : undefined;
    const words = [error, detail ?? errors].filter(Boolean).join(": ");
    if (words) return words.slice(0, 4000);
  } catch {
    // not JSON
  }
  return text.trim().slice(0, 4000) || `HTTP ${status}`;
}

const DATA_URL = /^data:(image\/[a-z+.-]+);base64,(.*)$/is;

/**
 * The most a server's answer may hold. A generation answers its images as base64 (a batch of eight
 * 2048² PNGs is about 100 MB); anything else is a few kB to a few MB. A larger answer is refused
 * rather than read into memory (a broken server, or a URL that is not a WebUI server at all).
 */
export const WEBUI_ANSWER_LIMITS = { generation: 256 * 1024 * 1024, other: 16 * 1024 * 1024 } as const;

class AnswerTooLarge extends Error {}

/** The body as text, refusing (and cancelling) one larger than `maxBytes`. */
async function boundedText(response: Response, maxBytes: number): Promise<string> {
  const declared = Number(response.headers.get("content-length") ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    throw new AnswerTooLarge();
  }
  if (!response.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new AnswerTooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, size).toString("utf8");
}

export class WebUiClient {
  constructor(private readonly defaultTimeoutMs: number) {}

  private async call<T>(server: WebUiServer, method: "GET" | "POST", path: string, body?: unknown, options: { timeoutMs?: number; signal?: AbortSignal; maxAnswerBytes?: number } = {}): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (server.credentials) headers.authorization = `Basic ${Buffer.from(`${server.credentials.username}:${server.credentials.password}`).toString("base64")}`;
    const signals = [AbortSignal.timeout(options.timeoutMs ?? this.defaultTimeoutMs)];
    if (options.signal) signals.push(options.signal);
    let response: Response;
    let text: string;
    try {
      response = await fetch(`${server.baseUrl}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}), signal: AbortSignal.any(signals), redirect: "error" });
      text = await boundedText(response, options.maxAnswerBytes ?? WEBUI_ANSWER_LIMITS.other);
    } catch (e) {
      if (e instanceof AnswerTooLarge) throw new WebUiRefused(response!.status, `the answer to ${path} is larger than ${options.maxAnswerBytes ?? WEBUI_ANSWER_LIMITS.other} bytes`);
      throw new WebUiUnreachable(server.baseUrl, errorCode(e));
    }
    if (!response.ok) throw new WebUiRefused(response.status, detailOf(response.status, text));
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new WebUiRefused(response.status, `the answer to ${path} is not JSON`);
    }
  }

  /** The checkpoints the server offers (`/sdapi/v1/sd-models`): also its health check. */
  async listModels(server: WebUiServer, timeoutMs?: number): Promise<WebUiModel[]> {
    const list = await this.call<unknown>(server, "GET", "/sdapi/v1/sd-models", undefined, timeoutMs ? { timeoutMs } : {});
    if (!Array.isArray(list)) throw new WebUiRefused(200, "/sdapi/v1/sd-models did not answer a list");
    return list.flatMap((m) => {
      const r = m as { title?: unknown; model_name?: unknown; filename?: unknown };
      return typeof r.title === "string" ? [{ title: r.title, modelName: typeof r.model_name === "string" ? r.model_name : r.title, filename: typeof r.filename === "string" ? r.filename : null }] : [];
    });
  }

  /**
   * Runs one task (txt2img, img2img, extras, rembg: `WEBUI_TASK_PATHS`); holds until the server has
   * finished (it runs one at a time) and answers its JSON: `{images, parameters, info}`, or
   * `{image, html_info}` for the single-image tasks.
   */
  async generate(server: WebUiServer, path: string, body: Record<string, unknown>, options: { timeoutMs: number; signal?: AbortSignal }): Promise<WebUiGeneration> {
    const out = await this.call<WebUiGeneration & { image?: unknown }>(server, "POST", path, body, { ...options, maxAnswerBytes: WEBUI_ANSWER_LIMITS.generation });
    if (!out || typeof out !== "object" || (!Array.isArray(out.images) && typeof out.image !== "string")) throw new WebUiRefused(200, `${path} answered without images`);
    return out;
  }

  /** One task's state (`/internal/progress`, keyed by the `force_task_id` it was started with). */
  async taskProgress(server: WebUiServer, taskId: string, lastPreviewId: number | null): Promise<WebUiTaskProgress> {
    const r = await this.call<Record<string, unknown>>(server, "POST", "/internal/progress", { id_task: taskId, id_live_preview: lastPreviewId ?? -1, live_preview: true });
    const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
    let livePreview: WebUiTaskProgress["livePreview"] = null;
    if (typeof r.live_preview === "string") {
      const m = DATA_URL.exec(r.live_preview);
      if (m) livePreview = { mediaType: m[1]!.toLowerCase(), bytes: Buffer.from(m[2]!, "base64") };
    }
    return {
      active: r.active === true,
      queued: r.queued === true,
      completed: r.completed === true,
      progress: num(r.progress),
      etaSeconds: num(r.eta),
      livePreview,
      livePreviewId: num(r.id_live_preview),
    };
  }

  /** The server's sampling step (`/sdapi/v1/progress`); it does not say which task, so read it only while ours is active. */
  async samplingState(server: WebUiServer): Promise<WebUiSamplingState> {
    const r = await this.call<{ state?: { sampling_step?: unknown; sampling_steps?: unknown; job?: unknown } }>(server, "GET", "/sdapi/v1/progress?skip_current_image=true");
    const s = r.state ?? {};
    return {
      step: typeof s.sampling_step === "number" ? s.sampling_step : 0,
      steps: typeof s.sampling_steps === "number" ? s.sampling_steps : 0,
      job: typeof s.job === "string" ? s.job : "",
    };
  }

  /** Interrupts whatever the server runs: callers check the task first (it has no task id). */
  async interrupt(server: WebUiServer): Promise<void> {
    await this.call<unknown>(server, "POST", "/sdapi/v1/interrupt");
  }
}
