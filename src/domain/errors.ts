/** The one error type that crosses layers. Transports map `code` once (REST status, GraphQL extensions.code). */
export const ERROR_CODES = ["BAD_INPUT", "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "RATE_LIMITED", "UNAVAILABLE", "INTERNAL"] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export class DomainError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** Dotted path of the offending input field, when one is to blame. */
    readonly field?: string,
  ) {
    super(message);
    this.name = "DomainError";
  }

  static badInput(message: string, field?: string) {
    return new DomainError("BAD_INPUT", message, field);
  }
  static unauthenticated(message = "authentication required: send an x-api-key header or a bearer session token") {
    return new DomainError("UNAUTHENTICATED", message);
  }
  static forbidden(message: string) {
    return new DomainError("FORBIDDEN", message);
  }
  static notFound(message: string) {
    return new DomainError("NOT_FOUND", message);
  }
  static conflict(message: string, field?: string) {
    return new DomainError("CONFLICT", message, field);
  }
  static unavailable(message: string) {
    return new DomainError("UNAVAILABLE", message);
  }
}

export function isDomainError(e: unknown): e is DomainError {
  return e instanceof DomainError;
}
