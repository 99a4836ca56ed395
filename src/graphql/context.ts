import type { FastifyBaseLogger } from "fastify";
import type { Credentials, Principal } from "../domain/principal.js";
import type { Runtime } from "../runtime.js";

export interface GraphQLContext {
  runtime: Runtime;
  log: FastifyBaseLogger;
  requestId: string;
  /** The authenticated caller; throws UNAUTHENTICATED/FORBIDDEN when the credentials do not hold. */
  principal(): Promise<Principal>;
}

export function createContext(runtime: Runtime, credentials: Credentials, log: FastifyBaseLogger, requestId: string, known?: Principal): GraphQLContext {
  let cached: Promise<Principal> | undefined = known ? Promise.resolve(known) : undefined;
  return {
    runtime,
    log,
    requestId,
    principal: () => (cached ??= runtime.access.authenticate(credentials)),
  };
}
