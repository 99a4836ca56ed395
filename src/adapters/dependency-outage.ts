import { DomainError } from "../domain/errors.js";

/**
 * Recognises errors that mean a dependency is throttling or out of reach (AWS answering SlowDown or
 * 5xx after the SDK's own retries, Postgres or Redis gone, a refused or reset connection) and turns
 * them into one UNAVAILABLE DomainError, so a client is told to try again (503 + Retry-After on REST)
 * instead of getting an internal error. Only the error's class and code go into the message: never
 * its text, which may carry a URL or host.
 */

const NETWORK_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ENOTFOUND", "EPIPE", "ECONNABORTED", "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT"]);
const AWS_THROTTLING = /^(Throttling|ThrottlingException|ThrottledException|SlowDown|TooManyRequestsException|RequestLimitExceeded|RequestThrottled|RequestThrottledException|ProvisionedThroughputExceededException|ServiceUnavailable|ServiceUnavailableException)$/;
/** Postgres SQLSTATEs for a server that is going away, starting, full or unreachable. */
const PG_UNAVAILABLE = /^(57P01|57P02|57P03|53300|08000|08001|08003|08004|08006)$/;

/** How long a client should wait before trying again, in seconds (REST's Retry-After). */
export const OUTAGE_RETRY_AFTER_SECONDS = 5;

interface ErrorShape {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  cause?: unknown;
  errors?: unknown;
  driverError?: unknown;
  $metadata?: unknown;
  $fault?: unknown;
  $retryable?: { throttling?: boolean };
}

const shape = (e: unknown): ErrorShape | undefined => (typeof e === "object" && e !== null ? (e as ErrorShape) : undefined);

/** The network code on the error, its cause, or (Node's happy-eyeballs) one of its aggregated errors. */
function networkCode(e: unknown, depth = 0): string | undefined {
  const s = shape(e);
  if (!s || depth > 4) return undefined;
  if (typeof s.code === "string" && NETWORK_CODES.has(s.code)) return s.code;
  if (Array.isArray(s.errors)) for (const inner of s.errors) if (networkCode(inner, depth + 1)) return networkCode(inner, depth + 1);
  return networkCode(s.cause, depth + 1);
}

function describe(e: unknown): { what: string; detail: string } | undefined {
  const s = shape(e);
  if (!s) return undefined;
  const name = typeof s.name === "string" ? s.name : "Error";
  if (s.$metadata !== undefined) {
    const status = (s.$metadata as { httpStatusCode?: unknown }).httpStatusCode;
    // A HEAD answer has no body, so the SDK cannot name the error: the status says it then.
    const detail = /^Unknown/.test(name) && typeof status === "number" ? `HTTP ${status}` : name;
    if (s.$retryable?.throttling || AWS_THROTTLING.test(name) || status === 429 || status === 503) return { what: "AWS is throttling requests", detail };
    if (s.$fault === "server") return { what: "AWS answered with a server error", detail };
    const code = networkCode(e);
    if (code) return { what: "AWS could not be reached", detail: code };
    return undefined;
  }
  const driver = shape(s.driverError) ?? s;
  if (typeof driver.code === "string" && PG_UNAVAILABLE.test(driver.code)) return { what: "the database is unavailable", detail: driver.code };
  const message = typeof s.message === "string" ? s.message : "";
  if (/^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error)/.test(message)) return { what: "the database is unavailable", detail: "connection lost" };
  if (name === "MaxRetriesPerRequestError" || message === "Connection is closed.") return { what: "Redis is unavailable", detail: name === "Error" ? "connection closed" : name };
  const code = networkCode(e);
  if (code) return { what: "a service Diffgate depends on could not be reached", detail: code };
  return undefined;
}

/** UNAVAILABLE for a dependency outage; undefined for anything else (which stays an internal error). */
export function asDependencyOutage(e: unknown): DomainError | undefined {
  if (e instanceof DomainError) return undefined;
  const d = describe(e);
  return d ? DomainError.unavailable(`${d.what} (${d.detail}); try again in a few seconds`) : undefined;
}
