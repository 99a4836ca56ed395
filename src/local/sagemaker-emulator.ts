import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * The SageMaker emulator: one loopback HTTP server speaking SageMaker's control-plane protocol
 * (awsJson1_1, `X-Amz-Target: SageMaker.<Op>`), SageMaker Runtime (restJson) and Application Auto
 * Scaling (awsJson1_1, `AnyScaleFrontendService.<Op>`). The AWS SDK reaches it only through the
 * standard AWS_ENDPOINT_URL_* overrides.
 *
 * This first version knows no resources yet: it answers the read operations truthfully for an
 * account with none, and refuses every other operation as SageMaker refuses an unknown one.
 * Endpoints, invocations and training jobs are added with those features.
 */

type JsonBody = Record<string, unknown>;

interface EmulatorError {
  status: number;
  type: string;
  message: string;
}

const MAX_BODY = 1024 * 1024;

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error("request too large"), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown, contentType = "application/x-amz-json-1.1") {
  const payload = JSON.stringify(body);
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(payload), "x-amzn-requestid": crypto.randomUUID() });
  res.end(payload);
}

function sendError(res: ServerResponse, e: EmulatorError, contentType?: string) {
  res.setHeader("x-amzn-errortype", e.type);
  sendJson(res, e.status, { __type: e.type, message: e.message }, contentType);
}

const validation = (message: string): EmulatorError => ({ status: 400, type: "ValidationException", message });

function maxResults(body: JsonBody): number {
  const v = body.MaxResults;
  if (v === undefined) return 10;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > 100) {
    throw validation(`1 validation error detected: Value '${String(v)}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100`);
  }
  return v;
}

type ControlHandler = (body: JsonBody) => unknown;

const SAGEMAKER_OPERATIONS: Record<string, ControlHandler> = {
  ListEndpoints: (body) => {
    maxResults(body);
    return { Endpoints: [] };
  },
  ListTrainingJobs: (body) => {
    maxResults(body);
    return { TrainingJobSummaries: [] };
  },
  DescribeEndpoint: (body) => {
    const name = body.EndpointName;
    if (typeof name !== "string" || name.length === 0) throw validation("1 validation error detected: Value null at 'endpointName' failed to satisfy constraint: Member must not be null");
    throw validation(`Could not find endpoint "${name}".`);
  },
};

export interface SageMakerEmulator {
  url: string;
  stop(): Promise<void>;
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://emulator");
  const runtimeMatch = /^\/endpoints\/([^/]+)\/(async-invocations|invocations)$/.exec(url.pathname);
  if (req.method === "POST" && runtimeMatch) {
    await readBody(req);
    const name = decodeURIComponent(runtimeMatch[1]!);
    return sendError(res, validation(`Endpoint ${name} of account 000000000000 not found.`), "application/json");
  }
  if (req.method !== "POST" || url.pathname !== "/") return sendError(res, { status: 404, type: "UnknownOperationException", message: `no operation at ${req.method} ${url.pathname}` });

  const target = req.headers["x-amz-target"];
  const raw = await readBody(req);
  let body: JsonBody;
  try {
    const parsed: unknown = raw.length ? JSON.parse(raw.toString("utf8")) : {};
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
    body = parsed as JsonBody;
  } catch {
    return sendError(res, { status: 400, type: "SerializationException", message: "Start of structure or map found where not expected." });
  }
  if (typeof target !== "string") return sendError(res, { status: 400, type: "UnknownOperationException", message: "missing X-Amz-Target" });
  const [service, operation] = target.split(".");
  const handler = service === "SageMaker" && operation ? SAGEMAKER_OPERATIONS[operation] : undefined;
  if (!handler) return sendError(res, { status: 400, type: "UnknownOperationException", message: `The emulator does not implement ${target} yet.` });
  try {
    sendJson(res, 200, handler(body) ?? {});
  } catch (e) {
    if (e && typeof e === "object" && "type" in e) return sendError(res, e as EmulatorError);
    throw e;
  }
}

export async function startSageMakerEmulator(host = "127.0.0.1", port = 0): Promise<SageMakerEmulator> {
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      const status = (e as { status?: number }).status === 413 ? 413 : 500;
      if (!res.headersSent) sendError(res, { status, type: status === 413 ? "ValidationException" : "InternalFailure", message: String((e as Error).message ?? e) });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${host}:${address.port}`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
