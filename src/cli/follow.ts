/**
 * Following a checkpoint until it is Active or Failed: the `checkpointEvents` subscription over
 * graphql-ws (progress and status events, resumed after the last seen `seq` when the socket
 * drops), or polling `checkpoint(id)` over HTTP when the WebSocket cannot be used.
 */
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import { z } from "zod";
import type { DiffgateClient } from "./api-client.js";

export type FinalState = { status: "Active" } | { status: "Failed"; reason: string };

export interface ImportProgress {
  file: string;
  bytesDone: number;
  bytesTotal: number | undefined;
}

export interface FollowOptions {
  api: DiffgateClient;
  apiKey: string;
  id: string;
  onProgress?: (progress: ImportProgress) => void;
  /** Messages about the way of following (reconnects, fallback to polling). */
  onNote?: (message: string) => void;
  signal?: AbortSignal;
  /** Reconnects after a dropped event stream before falling back to polling (default 3). */
  reconnects?: number;
  pollIntervalMs?: number;
}

const SUBSCRIPTION = `subscription CheckpointEvents($id: ID!, $after: Int) {
  checkpointEvents(id: $id, after: $after) { seq type data terminal }
}`;

const eventSchema = z.object({ seq: z.number(), type: z.string(), data: z.record(z.string(), z.unknown()), terminal: z.boolean() });
type CheckpointEvent = z.infer<typeof eventSchema>;
const progressSchema = z.object({ file: z.string(), bytesDone: z.number(), bytesTotal: z.number().nullable().optional() });
const statusSchema = z.object({ status: z.string(), reason: z.string().optional() });

/** The server refused the subscription itself (credentials, permissions, unknown checkpoint): no point retrying. */
class FatalFollowError extends Error {
  override name = "FatalFollowError";
}

/** The event stream ended or dropped before a final status: worth reconnecting. */
class StreamInterrupted extends Error {
  override name = "StreamInterrupted";
}

function isCloseEvent(e: unknown): e is { code: number; reason: string } {
  return typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "number" && typeof (e as { reason?: unknown }).reason === "string";
}

/** graphql-ws rejects with a close event, an Error, or the list of GraphQL errors. */
function classify(e: unknown): Error {
  if (Array.isArray(e)) {
    const first: unknown = e[0];
    const message = typeof first === "object" && first !== null && typeof (first as { message?: unknown }).message === "string" ? (first as { message: string }).message : "the subscription was refused";
    return new FatalFollowError(message);
  }
  if (isCloseEvent(e)) {
    const text = `the event stream closed (${e.code}${e.reason ? `: ${e.reason}` : ""})`;
    // 4400-4498 are graphql-ws protocol refusals (4401 Unauthorized, 4403 Forbidden…); 4499 is a local terminate.
    return e.code >= 4400 && e.code < 4499 ? new FatalFollowError(text) : new StreamInterrupted(text);
  }
  if (e instanceof Error) return new StreamInterrupted(e.message || e.name);
  return new StreamInterrupted(String(e));
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error("cancelled");
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal!));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** One subscription from `after`: resolves with the final state, rejects when the stream drops or is refused. */
function subscribeUntilFinal(client: Client, options: FollowOptions, after: number, onEvent: (e: CheckpointEvent) => FinalState | "continue"): Promise<FinalState> {
  return new Promise<FinalState>((resolve, reject) => {
    let settled = false;
    const finish = (fn: () => void) => {
      if (settled) return;
      settled = true;
      options.signal?.removeEventListener("abort", onAbort);
      unsubscribe();
      fn();
    };
    const onAbort = () => finish(() => reject(abortError(options.signal!)));
    const unsubscribe = client.subscribe<{ checkpointEvents: unknown }>(
      { query: SUBSCRIPTION, variables: { id: options.id, after } },
      {
        next: (result) => {
          if (result.errors?.length) return finish(() => reject(new FatalFollowError(result.errors![0]!.message)));
          const parsed = eventSchema.safeParse(result.data?.checkpointEvents);
          if (!parsed.success) return finish(() => reject(new FatalFollowError(`unexpected event from the server: ${JSON.stringify(result.data)}`)));
          const outcome = onEvent(parsed.data);
          if (outcome !== "continue") finish(() => resolve(outcome));
        },
        error: (e) => finish(() => reject(classify(e))),
        complete: () => finish(() => reject(new StreamInterrupted("the event stream ended before the checkpoint was Active or Failed"))),
      },
    );
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** The failure reason the server stored, or the one the event carried when the lookup fails. */
async function failureReason(options: FollowOptions, fromEvent: string | undefined): Promise<string> {
  try {
    const c = await options.api.checkpoint(options.id);
    return c.failureReason ?? fromEvent ?? "no reason given";
  } catch {
    return fromEvent ?? "no reason given";
  }
}

/** Polls `checkpoint(id)` until it is Active or Failed (no byte progress this way). */
export async function pollUntilFinal(options: FollowOptions): Promise<FinalState> {
  for (;;) {
    const c = await options.api.checkpoint(options.id);
    if (c.status === "Active") return { status: "Active" };
    if (c.status === "Failed") return { status: "Failed", reason: c.failureReason ?? "no reason given" };
    await sleep(options.pollIntervalMs ?? 1_000, options.signal);
  }
}

/** Follows the checkpoint's events until it is Active or Failed. */
export async function followUntilFinal(options: FollowOptions): Promise<FinalState> {
  let connected = false;
  const client = createClient({
    url: options.api.wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { "x-api-key": options.apiKey },
    lazy: true,
    retryAttempts: 0, // reconnects are ours, resuming after the last seen event
    keepAlive: 15_000,
    on: { connected: () => (connected = true) },
  });
  let after = 0;
  let failedReconnects = 0;
  let failedReason: string | undefined;
  const onEvent = (event: CheckpointEvent): FinalState | "continue" => {
    after = event.seq;
    failedReconnects = 0;
    if (event.type === "progress") {
      const p = progressSchema.safeParse(event.data);
      if (p.success) options.onProgress?.({ file: p.data.file, bytesDone: p.data.bytesDone, bytesTotal: p.data.bytesTotal ?? undefined });
    } else if (event.type === "status") {
      const s = statusSchema.safeParse(event.data);
      if (s.success && s.data.status === "Active") return { status: "Active" };
      if (s.success && s.data.status === "Failed") {
        failedReason = s.data.reason;
        return { status: "Failed", reason: "" };
      }
    }
    return "continue";
  };
  try {
    for (;;) {
      try {
        const final = await subscribeUntilFinal(client, options, after, onEvent);
        return final.status === "Failed" ? { status: "Failed", reason: await failureReason(options, failedReason) } : final;
      } catch (e) {
        if (options.signal?.aborted || e instanceof FatalFollowError || !(e instanceof StreamInterrupted)) throw e;
        if (!connected) {
          options.onNote?.(`cannot follow events over WebSocket (${e.message}); polling the status instead`);
          return await pollUntilFinal(options);
        }
        if (++failedReconnects > (options.reconnects ?? 3)) {
          options.onNote?.(`${e.message}; polling the status instead`);
          return await pollUntilFinal(options);
        }
        options.onNote?.(`${e.message}; reconnecting`);
        await sleep(500 * 2 ** (failedReconnects - 1), options.signal);
      }
    }
  } finally {
    await client.dispose();
  }
}
