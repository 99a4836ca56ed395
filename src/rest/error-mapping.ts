import type { ErrorCode } from "../domain/errors.js";

/** The single mapping of DomainError codes to HTTP statuses. */
export const HTTP_STATUS_BY_CODE: Record<ErrorCode, number> = {
  BAD_INPUT: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  RATE_LIMITED: 429,
  UNAVAILABLE: 503,
  INTERNAL: 500,
};

/** Fastify's own request errors (body parsing, limits) and what to tell the client. */
export function describeFrameworkError(error: { code?: string; statusCode?: number; message: string }, bodyLimit: number): { status: number; message: string } | undefined {
  switch (error.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return { status: 400, message: `the request body is not valid JSON: ${error.message.replace(/^Body is not valid JSON but content-type is set to 'application\/json'$/, "it could not be parsed")}` };
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { status: 413, message: `the request body is larger than the limit of ${bodyLimit} bytes` };
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return { status: 415, message: "unsupported content type: send application/json" };
    case "FST_ERR_CTP_INVALID_CONTENT_LENGTH":
      return { status: 400, message: "the Content-Length header does not match the body" };
  }
  if (error instanceof SyntaxError || (typeof error.statusCode === "number" && error.statusCode === 400 && /JSON/i.test(error.message))) {
    return { status: 400, message: `the request body is not valid JSON: ${error.message}` };
  }
  if (typeof error.statusCode === "number" && error.statusCode >= 400 && error.statusCode < 500) return { status: error.statusCode, message: error.message };
  return undefined;
}
