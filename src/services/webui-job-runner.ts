import type { Logger } from "pino";
import type { EndpointEntity } from "../adapters/db/entities/endpoint.entity.js";
import { InferenceEntity } from "../adapters/db/entities/inference.entity.js";
import { previewThumbnail } from "../adapters/images/preview-thumbnail.js";
import type { ObjectStore } from "../adapters/storage/object-store.js";
import { WEBUI_TASK_PATHS, WebUiRefused, WebUiUnreachable, type WebUiClient, type WebUiServer } from "../adapters/webui/webui-client.js";
import { parseWebUiJson } from "../domain/webui-parameters.js";
import type { EndpointService } from "./endpoint-service.js";
import type { InferenceService, WebUiJobExecutor } from "./inference-service.js";
import type { DataSource } from "typeorm";

export interface WebUiRunSettings {
  /** How often a running job's progress is read from the server (and the most events per second it makes). */
  progressIntervalMs: number;
  /** A job running longer is interrupted and failed. */
  jobTimeoutMs: number;
  /** Send a job again, once, when its server died under it. */
  retryOnServerFailure: boolean;
  /** How long to wait before looking again at a server that went away. */
  serverRecheckMs: number;
  /** A preview every this many steps at most (0 = none). */
  previewEvery: number;
  maxDocumentBytes: number;
}

/** Runs, counting the first: a lost worker sends the job again; this many in all, then it fails. */
const MAX_RUNS = 3;
/** Previews are stored this small (longest side, pixels). */
const PREVIEW_SIDE = 128;
/** After an interrupt, how long the server may take to give the request back before we stop waiting. */
const INTERRUPT_GRACE_MS = 10_000;

const TITLE_HASH = /\s*\[[0-9a-f]{8,64}\]$/i;
const stem = (name: string) => name.replace(/^.*[\\/]/, "").replace(/\.(safetensors|ckpt|pt|pth|bin)$/i, "");

/**
 * Runs inference jobs on self-hosted WebUI servers (`/sdapi/v1`): one job at a time per server (the
 * inference service's gate), the job id as `force_task_id`, the checkpoint chosen per request with
 * `override_settings` (restored afterwards; the server's options are never written). While the
 * server works, its progress and live preview are read at a fixed rate and recorded as events.
 * Interrupts are sent only when the server says it is running this very job.
 */
export class WebUiJobRunner implements WebUiJobExecutor {
  constructor(
    private readonly db: DataSource,
    private readonly client: WebUiClient,
    private readonly endpoints: EndpointService,
    private readonly inferences: InferenceService,
    private readonly store: ObjectStore,
    private readonly settings: WebUiRunSettings,
    private readonly log: Logger,
  ) {}

  serverModel(endpoint: EndpointEntity, name: string): string | undefined {
    const wanted = name.trim();
    return (
      endpoint.serverModels.find((t) => t === wanted) ??
      endpoint.serverModels.find((t) => t.replace(TITLE_HASH, "") === wanted) ??
      endpoint.serverModels.find((t) => stem(t.replace(TITLE_HASH, "")) === stem(wanted))
    );
  }

  async interruptIfRunning(job: InferenceEntity, endpoint: EndpointEntity): Promise<string> {
    const server = this.endpoints.webUiServer(endpoint);
    const p = await this.client.taskProgress(server, job.id, null);
    if (p.active) {
      // The server's interrupt has no task id: it was checked to be ours just before.
      await this.client.interrupt(server);
      return "the server was running it and was interrupted";
    }
    if (p.queued) return "the server had not started it yet; whatever it returns is discarded";
    return "the server was not running it (nothing was interrupted)";
  }

  async run(queued: InferenceEntity, endpoint: EndpointEntity): Promise<{ recheckInMs?: number }> {
    let job = queued;
    const server = this.endpoints.webUiServer(endpoint);
    if (job.invokeStartedAt) {
      // An earlier run did not end: its worker was lost, or its server went away.
      const resumed = await this.resume(job, server);
      if (resumed) return resumed;
      job = (await this.inferences.reload(job.id))!;
    }
    if (job.runAttempts >= MAX_RUNS) {
      await this.inferences.fail(job.id, `gave up after ${job.runAttempts} attempts to run the job on WebUI server ${endpoint.name}`);
      return {};
    }
    const bytes = await this.store.getBytes(job.paramsKey, this.settings.maxDocumentBytes);
    const params = bytes ? (parseWebUiJson(bytes.toString("utf8")) as Record<string, unknown>) : null;
    if (!params || typeof params !== "object") {
      await this.inferences.fail(job.id, "the job's parameters are missing from the store");
      return {};
    }
    const used = job.models as Record<string, Array<{ model_name: string }>>;
    const title = used["Stable-diffusion"]?.[0]?.model_name;
    const vae = used.VAE?.[0]?.model_name;
    const overrides = typeof params.override_settings === "object" && params.override_settings !== null ? (params.override_settings as Record<string, unknown>) : {};
    // Generations carry the task id (for progress and task-checked interrupts) and the checkpoint;
    // extras and rembg take their parameters as they are (they have neither).
    const generation = job.taskType === "txt2img" || job.taskType === "img2img";
    const body: Record<string, unknown> = generation
      ? {
          ...params,
          force_task_id: job.id,
          override_settings: { ...overrides, ...(title ? { sd_model_checkpoint: title } : {}), ...(vae ? { sd_vae: vae } : {}) },
          override_settings_restore_afterwards: true,
          send_images: true,
          save_images: false,
        }
      : params;

    const startedAt = new Date();
    await this.db.getRepository(InferenceEntity).update({ id: job.id }, { invokeStartedAt: startedAt, runAttempts: job.runAttempts + 1 });
    // Refused only when the job changed meanwhile (cancelled after it took its slot): nothing is sent.
    if (job.status === "QUEUED" && !(await this.inferences.markDispatched(job.id, { endpointName: endpoint.name, provider: "webui" }))) return {};
    const path = WEBUI_TASK_PATHS[job.taskType as keyof typeof WEBUI_TASK_PATHS];

    const abort = new AbortController();
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      void this.timeOut(job, endpoint, abort);
    }, this.settings.jobTimeoutMs);
    const poller = this.pollProgress(job, server, Number(params.steps) || 20, abort.signal);
    let answer: unknown;
    try {
      answer = await this.client.generate(server, path, body, { timeoutMs: this.settings.jobTimeoutMs + INTERRUPT_GRACE_MS, signal: abort.signal });
    } catch (e) {
      return await this.runFailed(job, endpoint, e, timedOut);
    } finally {
      clearTimeout(deadline);
      abort.abort();
      await poller;
    }
    const current = await this.inferences.reload(job.id);
    if (!current || current.status === "CANCELLED" || current.status === "FAILED" || current.status === "SUCCEEDED") return {}; // cancelled or timed out meanwhile: the answer is discarded
    await this.inferences.complete(current, answer);
    return {};
  }

  /**
   * A run that did not end. The server may still be working on it (the request died with its
   * worker): when it is running this job it is interrupted, then the job runs again. A server that
   * does not answer is looked at again later, until the job's time is up.
   */
  private async resume(job: InferenceEntity, server: WebUiServer): Promise<{ recheckInMs?: number } | undefined> {
    let p;
    try {
      p = await this.client.taskProgress(server, job.id, null);
    } catch (e) {
      if (!(e instanceof WebUiUnreachable)) throw e;
      if (Date.now() - (job.dispatchedAt ?? job.invokeStartedAt!).getTime() > this.settings.jobTimeoutMs) {
        await this.inferences.fail(job.id, `WebUI server ${job.endpointName} did not come back within the job's time (${e.reason})`);
        return {};
      }
      return { recheckInMs: this.settings.serverRecheckMs };
    }
    if (p.active) {
      await this.client.interrupt(server);
      return { recheckInMs: this.settings.progressIntervalMs };
    }
    if (p.queued) return { recheckInMs: this.settings.progressIntervalMs * 4 };
    await this.inferences.note(job, "redispatched", { reason: "the earlier run did not finish (worker or server lost); running the job again", attempt: job.runAttempts + 1 });
    return undefined;
  }

  private async timeOut(job: InferenceEntity, endpoint: EndpointEntity, abort: AbortController): Promise<void> {
    let interrupted = "";
    try {
      interrupted = `; ${await this.interruptIfRunning(job, endpoint)}`;
    } catch (e) {
      interrupted = `; the server could not be interrupted (${(e as Error).message})`;
    }
    await this.inferences.fail(job.id, `the job ran longer than ${Math.round(this.settings.jobTimeoutMs / 1000)} s on WebUI server ${endpoint.name}${interrupted}`).catch((err: unknown) => this.log.warn({ err }, "recording a timeout failed"));
    setTimeout(() => abort.abort(), INTERRUPT_GRACE_MS).unref();
  }

  private async runFailed(job: InferenceEntity, endpoint: EndpointEntity, e: unknown, timedOut: boolean): Promise<{ recheckInMs?: number }> {
    const current = await this.inferences.reload(job.id);
    if (!current || timedOut || current.status === "CANCELLED" || current.status === "FAILED" || current.status === "SUCCEEDED") return {};
    if (e instanceof WebUiRefused) {
      await this.inferences.fail(job.id, `WebUI server ${endpoint.name} refused the job (${e.status}): ${e.detail}`);
      return {};
    }
    if (!(e instanceof WebUiUnreachable)) throw e;
    // The server went away mid-job: let its health check record that at once.
    await this.endpoints.checkWebUiHealth(endpoint.id).catch(() => undefined);
    if (this.settings.retryOnServerFailure && current.runAttempts < 2) {
      await this.inferences.note(job, "server-lost", { reason: `WebUI server ${endpoint.name} stopped answering mid-job (${e.reason}); the job runs again once it is back` });
      return { recheckInMs: this.settings.serverRecheckMs };
    }
    await this.inferences.fail(job.id, `WebUI server ${endpoint.name} stopped answering mid-job (${e.reason})`);
    return {};
  }

  /** Reads the server's progress for this job until `signal` ends the run; one event per read at most. */
  private async pollProgress(job: InferenceEntity, server: WebUiServer, requestedSteps: number, signal: AbortSignal): Promise<void> {
    let lastStep = job.lastStep;
    let lastPreviewId: number | null = null;
    let lastPreviewStep = 0;
    const every = this.settings.previewEvery;
    while (!signal.aborted) {
      await new Promise<void>((resolve) => {
        const stop = () => (clearTimeout(t), resolve());
        const t = setTimeout(() => (signal.removeEventListener("abort", stop), resolve()), this.settings.progressIntervalMs);
        signal.addEventListener("abort", stop, { once: true });
      });
      if (signal.aborted) return;
      try {
        const p = await this.client.taskProgress(server, job.id, lastPreviewId);
        if (!p.active) continue;
        const state = await this.client.samplingState(server);
        const total = state.steps > 0 ? state.steps : requestedSteps;
        const step = state.steps > 0 ? state.step : Math.floor((p.progress ?? 0) * total);
        if (signal.aborted || step <= lastStep) continue;
        let preview: Buffer | undefined;
        if (p.livePreview && p.livePreviewId !== lastPreviewId && every > 0 && step - lastPreviewStep >= every) {
          lastPreviewId = p.livePreviewId;
          preview = await previewThumbnail(p.livePreview.bytes, PREVIEW_SIDE);
          if (preview) lastPreviewStep = step;
        }
        await this.inferences.recordProgress({ ...job, lastStep }, { step, totalSteps: total, etaSeconds: p.etaSeconds, ...(preview ? { preview } : {}) });
        lastStep = step;
      } catch (err) {
        // A missed reading is harmless; the generation request tells whether the server is gone.
        this.log.debug({ err, inference: job.id }, "reading WebUI progress failed");
      }
    }
  }
}
