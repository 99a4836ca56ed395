import { unwrapResolverError } from "@apollo/server/errors";
import { GraphQLError, type GraphQLFormattedError } from "graphql";
import type { Logger } from "pino";
import { asDependencyOutage } from "../adapters/dependency-outage.js";
import { DomainError, ERROR_CODES } from "../domain/errors.js";

/** Codes that graphql-js and Apollo attach themselves, for malformed or invalid operations. */
const PROTOCOL_CODES = new Set(["GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT", "PERSISTED_QUERY_NOT_FOUND", "PERSISTED_QUERY_NOT_SUPPORTED", "OPERATION_RESOLUTION_FAILURE", "BAD_REQUEST"]);

/** True for errors the client caused or that a service raised on purpose; false for our own faults. */
export function isExpectedGraphQLError(error: unknown): boolean {
  const original = unwrapResolverError(error);
  if (original instanceof DomainError || asDependencyOutage(original)) return true;
  const code = original instanceof GraphQLError ? original.extensions?.code : undefined;
  if ((typeof code === "string" && PROTOCOL_CODES.has(code)) || ownCode(original)) return true;
  return original instanceof GraphQLError && !original.originalError;
}

/**
 * The single mapping of errors to GraphQL: DomainError codes pass through, anything else is masked.
 * `log` receives our own faults only when no request logger will (graphql-ws).
 */
export function formatGraphQLError(formatted: GraphQLFormattedError, error: unknown, log?: Logger): GraphQLFormattedError {
  const unwrapped = unwrapResolverError(error);
  const outage = asDependencyOutage(unwrapped);
  if (outage) log?.warn({ err: unwrapped }, outage.message);
  const original = outage ?? unwrapped;
  const base = { ...(formatted.locations ? { locations: formatted.locations } : {}), ...(formatted.path ? { path: formatted.path } : {}) };
  if (original instanceof DomainError) {
    return { ...base, message: original.message, extensions: { code: original.code, ...(original.field ? { field: original.field } : {}) } };
  }
  const own = ownCode(original);
  if (own) return { ...base, message: formatted.message, extensions: { code: own } };
  const code = formatted.extensions?.code;
  if (typeof code === "string" && PROTOCOL_CODES.has(code)) {
    return { ...base, message: formatted.message, extensions: { code: code === "BAD_USER_INPUT" ? "BAD_INPUT" : code } };
  }
  if (original instanceof GraphQLError && !original.originalError && original.extensions?.code === undefined && !original.path) {
    // graphql-js's own errors raised before execution (e.g. variable coercion, or "Too many errors
    // processing variables" past its limit of 50) are about the request, not about us. Look at the
    // error's own code: Apollo's formatting fills a missing one in with INTERNAL_SERVER_ERROR. An
    // error with a path (a non-null field resolved to null) is ours.
    return { ...base, message: formatted.message, extensions: { code: "BAD_INPUT" } };
  }
  log?.error({ err: original }, "unhandled error in a GraphQL operation");
  return { ...base, message: "internal error", extensions: { code: "INTERNAL" } };
}

/** One of our codes, on a GraphQLError we raised ourselves outside a resolver (the transport's own refusals). */
function ownCode(error: unknown): DomainError["code"] | undefined {
  if (!(error instanceof GraphQLError) || error.originalError) return undefined;
  const code = error.extensions?.code;
  return typeof code === "string" && code !== "INTERNAL" && (ERROR_CODES as readonly string[]).includes(code) ? (code as DomainError["code"]) : undefined;
}
