import { DomainError } from "../domain/errors.js";

/** The JSON body as an object, refusing anything else (arrays, strings, null, a missing body). */
export function bodyObject(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw DomainError.badInput("the request body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

/** Refuses fields a route does not know, naming them (upstream crashed with a 502 instead). */
export function refuseUnknownFields(body: Record<string, unknown>, known: readonly string[]): void {
  const unknown = Object.keys(body).filter((k) => !known.includes(k));
  if (unknown.length) throw DomainError.badInput(`unknown field(s): ${unknown.join(", ")}; this route accepts ${known.join(", ")}`, unknown[0]);
}

/** A multi-valued query parameter (`?types=Lora&types=VAE`, or comma-separated). */
export function queryList(query: unknown, name: string): string[] | undefined {
  const value = (query as Record<string, unknown> | undefined)?.[name];
  if (value === undefined || value === "") return undefined;
  const values = Array.isArray(value) ? value : [value];
  if (values.some((v) => typeof v !== "string")) throw DomainError.badInput(`${name}: must be text`, name);
  return (values as string[]).flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
}

/** A query-string value as one string (a repeated parameter is refused). */
export function queryString(query: unknown, name: string): string | undefined {
  const value = (query as Record<string, unknown> | undefined)?.[name];
  if (value === undefined || value === "") return undefined;
  if (typeof value !== "string") throw DomainError.badInput(`${name}: give it once`, name);
  return value;
}

/** Runs a service call whose input was renamed from the wire's names, and names fields the wire's way in errors. */
export async function withWireFieldNames<T>(wireNames: Record<string, string>, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (e instanceof DomainError && e.field) {
      const [head, ...rest] = e.field.split(".");
      const wire = head !== undefined ? wireNames[head] : undefined;
      if (wire) {
        const field = [wire, ...rest].join(".");
        throw new DomainError(e.code, e.message.startsWith(`${e.field}:`) ? `${field}:${e.message.slice(e.field.length + 1)}` : e.message, field);
      }
    }
    throw e;
  }
}
