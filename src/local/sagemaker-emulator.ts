import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { asyncInvocationInput, InvocationEngine } from "./emulator-invocations.js";
import { AUTOSCALING_OPERATIONS, AwsError, CLOUDWATCH_OPERATIONS, SAGEMAKER_OPERATIONS } from "./emulator-operations.js";
import { DEFAULT_EMULATOR_SETTINGS, EmulatorState, type EmulatorSettings } from "./emulator-state.js";
import { TrainingEngine } from "./emulator-training.js";

/**
 * The SageMaker emulator: one loopback HTTP server speaking SageMaker's control plane (awsJson1_1,
 * `X-Amz-Target: SageMaker.<Op>`), SageMaker Runtime (restJson), Application Auto Scaling
 * (awsJson1_1, `AnyScaleFrontendService.<Op>`) and CloudWatch alarms (awsJson1_0,
 * `GraniteServiceVersion20100801.<Op>`). The AWS SDK reaches it only through the standard
 * AWS_ENDPOINT_URL_* overrides. It validates like SageMaker and walks endpoints through
 * SageMaker's statuses with configurable delays. Async invocations run on test cards (see
 * emulator-invocations.ts); training jobs walk their statuses and write a placeholder model
 * artifact (see emulator-training.ts). It does not check signatures.
 */

type Body = Record<string, unknown>;

/** One request the emulator received, for tests that assert exactly what Diffgate sent. */
export interface EmulatorRequest {
  service: "SageMaker" | "ApplicationAutoScaling" | "CloudWatch" | "SageMakerRuntime";
  operation: string;
  body: Body;
  headers: Record<string, string>;
  at: number;
}

export interface SageMakerEmulator {
  url: string;
  state: EmulatorState;
  requests: EmulatorRequest[];
  /** Async invocations: their records, per-endpoint queue stats, and waiting for one to settle. */
  invocations: InvocationEngine;
  /** Training jobs: their operations and the writing of their model artifacts. */
  training: TrainingEngine;
  /** Requests of one operation, in arrival order. */
  calls(operation: string): EmulatorRequest[];
  stop(): Promise<void>;
}

const SERVICES = {
  SageMaker: { operations: SAGEMAKER_OPERATIONS, contentType: "application/x-amz-json-1.1", service: "SageMaker" },
  AnyScaleFrontendService: { operations: AUTOSCALING_OPERATIONS, contentType: "application/x-amz-json-1.1", service: "ApplicationAutoScaling" },
  GraniteServiceVersion20100801: { operations: CLOUDWATCH_OPERATIONS, contentType: "application/x-amz-json-1.0", service: "CloudWatch" },
} as const;

const MAX_BODY = 1024 * 1024;

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new AwsError(413, "ValidationException", "Request body too large"));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown, contentType: string) {
  const payload = JSON.stringify(body);
  res.writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(payload), "x-amzn-requestid": randomUUID() });
  res.end(payload);
}

function sendError(res: ServerResponse, e: AwsError, contentType: string) {
  res.setHeader("x-amzn-errortype", e.type);
  send(res, e.status, { __type: e.type, message: e.message, Message: e.message }, contentType);
}

function headerMap(req: IncomingMessage): Record<string, string> {
  return Object.fromEntries(Object.entries(req.headers).flatMap(([k, v]) => (typeof v === "string" ? [[k, v]] : [])));
}

export async function startSageMakerEmulator(
  options: { settings?: Partial<EmulatorSettings>; host?: string; port?: number; /** The emulator's clock (epoch ms), for tests that move time. */ now?: () => number } = {},
): Promise<SageMakerEmulator> {
  const state = new EmulatorState({ ...DEFAULT_EMULATOR_SETTINGS, ...options.settings }, options.now);
  const requests: EmulatorRequest[] = [];
  const invocations = new InvocationEngine(state);
  const training = new TrainingEngine(state);

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://emulator");
    const runtimeMatch = /^\/endpoints\/([^/]+)\/(async-invocations|invocations)$/.exec(url.pathname);
    if (req.method === "POST" && runtimeMatch) {
      const raw = await readBody(req);
      const name = decodeURIComponent(runtimeMatch[1]!);
      const headers = headerMap(req);
      if (runtimeMatch[2] === "async-invocations") {
        const input = asyncInvocationInput(headers);
        // A configured delay holds the request before SageMaker takes it; a caller that goes away
        // meanwhile (a killed worker) leaves no invocation behind, as a request that never arrived.
        const delay = state.settings.operationDelaysMs?.InvokeEndpointAsync;
        if (delay) {
          await new Promise((r) => setTimeout(r, delay));
          if (req.socket.destroyed || res.destroyed) return;
        }
        requests.push({ service: "SageMakerRuntime", operation: "InvokeEndpointAsync", body: { EndpointName: name, ...input, ...(raw.length > 0 ? { Body: raw.toString("utf8") } : {}) }, headers, at: Date.now() });
        try {
          const accepted = invocations.accept(name, input, raw);
          const payload = JSON.stringify({ InferenceId: accepted.inferenceId });
          res.writeHead(202, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(payload),
            "x-amzn-requestid": randomUUID(),
            "x-amzn-sagemaker-outputlocation": accepted.outputLocation,
            "x-amzn-sagemaker-failurelocation": accepted.failureLocation,
          });
          res.end(payload);
          return;
        } catch (e) {
          if (e instanceof AwsError) return sendError(res, e, "application/json");
          throw e;
        }
      }
      requests.push({ service: "SageMakerRuntime", operation: "InvokeEndpoint", body: { EndpointName: name }, headers, at: Date.now() });
      const endpoint = state.endpoint(name);
      if (!endpoint) return sendError(res, new AwsError(400, "ValidationError", `Endpoint ${name} of account ${state.settings.accountId} not found.`), "application/json");
      return sendError(res, new AwsError(400, "ValidationError", `The emulator runs async invocations only (InvokeEndpointAsync), not real-time ones (endpoint ${name}).`), "application/json");
    }

    const target = req.headers["x-amz-target"];
    const [prefix, operation] = typeof target === "string" ? target.split(".") : [];
    const service = prefix ? SERVICES[prefix as keyof typeof SERVICES] : undefined;
    const contentType = service?.contentType ?? "application/x-amz-json-1.1";
    if (req.method !== "POST" || url.pathname !== "/" || !service || !operation) {
      await readBody(req).catch(() => undefined);
      return sendError(res, new AwsError(400, "UnknownOperationException", `Unknown operation ${String(target ?? `${req.method} ${url.pathname}`)}`), contentType);
    }
    const raw = await readBody(req);
    let body: Body;
    try {
      const parsed: unknown = raw.length ? JSON.parse(raw.toString("utf8")) : {};
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("not an object");
      body = parsed as Body;
    } catch {
      return sendError(res, new AwsError(400, "SerializationException", "Start of structure or map found where not expected."), contentType);
    }
    requests.push({ service: service.service, operation, body, headers: headerMap(req), at: Date.now() });
    const handler = (service.service === "SageMaker" ? training.operations[operation] : undefined) ?? (service.operations as Record<string, (s: EmulatorState, b: Body) => unknown>)[operation];
    if (!handler) return sendError(res, new AwsError(400, "UnknownOperationException", `The emulator does not implement ${String(target)}.`), contentType);
    const delay = state.settings.operationDelaysMs?.[operation];
    if (delay) await new Promise((r) => setTimeout(r, delay));
    try {
      send(res, 200, handler(state, body) ?? {}, contentType);
    } catch (e) {
      if (e instanceof AwsError) return sendError(res, e, contentType);
      throw e;
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (res.headersSent) return;
      if (e instanceof AwsError) return sendError(res, e, "application/x-amz-json-1.1");
      sendError(res, new AwsError(500, "InternalFailure", String((e as Error)?.message ?? e)), "application/x-amz-json-1.1");
    });
  });
  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, resolve);
  });
  const address = server.address() as AddressInfo;
  return {
    url: `http://${host}:${address.port}`,
    state,
    requests,
    invocations,
    training,
    calls: (operation) => requests.filter((r) => r.operation === operation),
    stop: async () => {
      await invocations.stop();
      await training.stop();
      await new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
    },
  };
}
