import type { FastifyReply } from "fastify";

/** The API version the WebUI extension compares with its own (it only warns on a mismatch). */
export const API_VERSION = "1.3.0";

const DEFAULT_MESSAGES: Record<number, string> = {
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  409: "Conflict",
  413: "Payload Too Large",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

export interface Envelope {
  statusCode: number;
  data?: unknown;
  message: string;
}

/**
 * Upstream's body shape `{statusCode, data, message}`. Unlike upstream, `data` is kept when it is an
 * empty list or object (upstream dropped falsy data, which broke clients reading `data.x`).
 */
export function envelope(statusCode: number, data?: unknown, message?: string): Envelope {
  return { statusCode, ...(data !== undefined && data !== null ? { data } : {}), message: message ?? DEFAULT_MESSAGES[statusCode] ?? "OK" };
}

export function sendEnvelope(reply: FastifyReply, statusCode: number, data?: unknown, message?: string): FastifyReply {
  // 204 would drop the body; upstream sent its JSON body with 204 and clients only look at the status.
  return reply.code(statusCode).type("application/json; charset=utf-8").send(envelope(statusCode, data, message));
}
