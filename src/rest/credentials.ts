import type { IncomingHttpHeaders } from "node:http";
import type { Credentials } from "../domain/principal.js";

function first(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** Credentials from HTTP headers: `x-api-key` and `Authorization: Bearer <token>`. */
export function credentialsFromHeaders(headers: IncomingHttpHeaders): Credentials {
  const apiKey = first(headers["x-api-key"]);
  const authorization = first(headers.authorization);
  let bearer: string | undefined;
  if (authorization !== undefined) {
    const match = /^Bearer(?:\s+(.*))?$/i.exec(authorization.trim());
    bearer = match ? (match[1] ?? "") : authorization.trim();
  }
  return { ...(apiKey !== undefined ? { apiKey } : {}), ...(bearer !== undefined ? { bearer } : {}) };
}

/** Credentials from a graphql-ws `connection_init` payload; header-style and camelCase names both work. */
export function credentialsFromConnectionParams(params: Readonly<Record<string, unknown>> | undefined): Credentials {
  if (!params) return {};
  const pick = (...names: string[]) => {
    for (const n of names) {
      const v = params[n];
      if (typeof v === "string") return v;
    }
    return undefined;
  };
  const apiKey = pick("x-api-key", "apiKey", "X-Api-Key");
  const authorization = pick("authorization", "Authorization");
  const token = pick("token");
  let bearer = token;
  if (bearer === undefined && authorization !== undefined) {
    const match = /^Bearer(?:\s+(.*))?$/i.exec(authorization.trim());
    bearer = match ? (match[1] ?? "") : authorization.trim();
  }
  return { ...(apiKey !== undefined ? { apiKey } : {}), ...(bearer !== undefined ? { bearer } : {}) };
}
