/** The Diffgate calls the CLI makes: REST for checkpoints, GraphQL over HTTP for a checkpoint's state. */
import { z } from "zod";
import type { CheckpointType } from "../domain/checkpoints.js";

/** A call the server refused, or a server that could not be reached; `message` is the server's own when it sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export type FetchFn = typeof fetch;

export interface ApiClientOptions {
  baseUrl: string;
  apiKey: string;
  fetch?: FetchFn;
  signal?: AbortSignal;
}

export interface CreatedUpload {
  id: string;
  status: string;
  /** Presigned UploadPart URLs, part 1 first. */
  partUrls: string[];
}

export interface PartTag {
  ETag: string;
  PartNumber: number;
}

export interface CheckpointState {
  id: string;
  status: string;
  failureReason: string | null;
}

const envelopeSchema = z.object({ statusCode: z.number().optional(), message: z.string().optional(), data: z.unknown().optional() });
const checkpointSchema = z.object({ id: z.string(), status: z.string() });
const createdUploadSchema = z.object({ checkpoint: checkpointSchema, s3PresignUrl: z.record(z.string(), z.array(z.string())) });
const checkpointDataSchema = z.object({ checkpoint: checkpointSchema });
const graphqlSchema = z.object({
  data: z.object({ checkpoint: z.object({ id: z.string(), status: z.string(), failureReason: z.string().nullable() }).nullable() }).nullable().optional(),
  errors: z.array(z.object({ message: z.string() })).optional(),
});

/** Why fetch itself failed, e.g. "connect ECONNREFUSED 127.0.0.1:8080" rather than undici's bare "fetch failed". */
export function networkReason(e: unknown): string {
  const cause = (e as { cause?: unknown }).cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === "string" && !cause.message.includes(code) ? `${code}: ${cause.message}` : cause.message;
  }
  return e instanceof Error ? e.message : String(e);
}

export class DiffgateClient {
  private readonly fetchFn: FetchFn;

  constructor(private readonly options: ApiClientOptions) {
    this.fetchFn = options.fetch ?? fetch;
  }

  /** The graphql-ws endpoint: same host and path prefix, ws(s) scheme. */
  get wsUrl(): string {
    return `${this.options.baseUrl.replace(/^http/, "ws")}/graphql`;
  }

  /** Starts a single-file multipart upload; the checkpoint stays Initial until {@link completeUpload}. */
  async createUpload(input: { type: CheckpointType; fileName: string; partsNumber: number; sizeBytes: number; message: string | undefined }): Promise<CreatedUpload> {
    const body = {
      checkpoint_type: input.type,
      filenames: [{ filename: input.fileName, parts_number: input.partsNumber, size: input.sizeBytes }],
      ...(input.message !== undefined ? { params: { message: input.message } } : {}),
    };
    const data = await this.rest("POST", "/checkpoints", body, createdUploadSchema);
    const partUrls = data.s3PresignUrl[input.fileName];
    if (!partUrls) throw new ApiError(`the server sent no upload URLs for ${input.fileName}`, undefined);
    return { id: data.checkpoint.id, status: data.checkpoint.status, partUrls };
  }

  /** Completes the upload with every part's ETag; the server checks them against the store and activates the checkpoint. */
  async completeUpload(id: string, fileName: string, parts: PartTag[]): Promise<{ status: string }> {
    const data = await this.rest("PUT", `/checkpoints/${encodeURIComponent(id)}`, { status: "Active", multi_parts_tags: { [fileName]: parts } }, checkpointDataSchema);
    return { status: data.checkpoint.status };
  }

  /** Queues an import of `url`; the worker downloads it into the store. */
  async importFromUrl(input: { type: CheckpointType; url: string; message: string | undefined }): Promise<{ id: string; status: string }> {
    const body = { checkpoint_type: input.type, urls: [input.url], ...(input.message !== undefined ? { params: { message: input.message } } : {}) };
    const data = await this.rest("POST", "/checkpoints", body, checkpointDataSchema);
    return { id: data.checkpoint.id, status: data.checkpoint.status };
  }

  /** Deletes checkpoints with their objects and unfinished uploads. */
  async deleteCheckpoints(ids: string[]): Promise<void> {
    await this.rest("DELETE", "/checkpoints", { checkpoint_id_list: ids }, z.unknown());
  }

  /** A checkpoint's status and failure reason (GraphQL over HTTP). */
  async checkpoint(id: string): Promise<CheckpointState> {
    const res = await this.send("POST", "/graphql", {
      query: "query Checkpoint($id: ID!) { checkpoint(id: $id) { id status failureReason } }",
      variables: { id },
    });
    const text = await res.text();
    const parsed = graphqlSchema.safeParse(parseJson(text));
    if (!parsed.success) throw new ApiError(`unexpected GraphQL answer (HTTP ${res.status}): ${snippet(text)}`, res.status);
    const error = parsed.data.errors?.[0];
    if (error) throw new ApiError(error.message, res.status);
    const checkpoint = parsed.data.data?.checkpoint;
    if (!checkpoint) throw new ApiError(`checkpoint ${id} not found`, res.status);
    return checkpoint;
  }

  private async send(method: string, route: string, body: unknown): Promise<Response> {
    const url = `${this.options.baseUrl}${route}`;
    try {
      return await this.fetchFn(url, {
        method,
        headers: { "content-type": "application/json", accept: "application/json", "x-api-key": this.options.apiKey },
        body: JSON.stringify(body),
        ...(this.options.signal ? { signal: this.options.signal } : {}),
      });
    } catch (e) {
      if (this.options.signal?.aborted) throw e;
      throw new ApiError(`cannot reach ${this.options.baseUrl}: ${networkReason(e)}`, undefined);
    }
  }

  /** A REST call answering upstream's envelope `{statusCode, data, message}`; a non-2xx answer throws with the server's message. */
  private async rest<T>(method: string, route: string, body: unknown, dataSchema: z.ZodType<T>): Promise<T> {
    const res = await this.send(method, route, body);
    const text = await res.text();
    const envelope = envelopeSchema.safeParse(parseJson(text));
    if (!res.ok) {
      const message = envelope.success && envelope.data.message ? envelope.data.message : snippet(text) || res.statusText;
      throw new ApiError(`HTTP ${res.status}: ${message}`, res.status);
    }
    if (res.status === 204) return dataSchema.parse(undefined);
    if (!envelope.success) throw new ApiError(`unexpected answer to ${method} ${route} (HTTP ${res.status}): ${snippet(text)}`, res.status);
    const data = dataSchema.safeParse(envelope.data.data);
    if (!data.success) throw new ApiError(`unexpected answer to ${method} ${route} (HTTP ${res.status}): ${snippet(text)}`, res.status);
    return data.data;
  }
}

function parseJson(text: string): unknown {
  try {
    return text ? (JSON.parse(text) as unknown) : undefined;
  } catch {
    return undefined;
  }
}

function snippet(text: string): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > 300 ? `${flat.slice(0, 300)}…` : flat;
}
