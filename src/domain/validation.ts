import { z } from "zod";
import { DomainError } from "./errors.js";

/** Parses outside input with a zod schema; the first problem becomes a BAD_INPUT naming the field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, fieldPrefix?: string): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const pathParts = [...(fieldPrefix ? [fieldPrefix] : []), ...issue.path.map(String)];
    const field = pathParts.join(".") || undefined;
    let message = issue.message;
    if (issue.code === "unrecognized_keys") message = `unknown field(s): ${issue.keys.join(", ")}`;
    throw DomainError.badInput(field ? `${field}: ${message}` : message, field);
  }
  const nul = nulCharacterAt(result.data, fieldPrefix ? [fieldPrefix] : []);
  if (nul) {
    const field = nul.join(".") || undefined;
    const message = "must not contain NUL (U+0000) characters";
    throw DomainError.badInput(field ? `${field}: ${message}` : message, field);
  }
  return result.data;
}

/**
 * The path of the first string (value or key) holding U+0000 in parsed input, if any. No valid
 * name, id, text or JSON value of ours contains one, and Postgres cannot store it in `text` or
 * `jsonb`: left unchecked it reached the database as an internal error.
 */
function nulCharacterAt(value: unknown, path: string[]): string[] | undefined {
  if (typeof value === "string") return value.includes("\u0000") ? [...path] : undefined;
  if (typeof value !== "object" || value === null || path.length > 1000) return undefined;
  const proto = Object.getPrototypeOf(value);
  if (!Array.isArray(value) && proto !== Object.prototype && proto !== null) return undefined; // Dates, Buffers, class instances
  for (const [key, item] of Object.entries(value)) {
    path.push(key);
    const found = key.includes("\u0000") ? [...path] : nulCharacterAt(item, path);
    path.pop();
    if (found) return found;
  }
  return undefined;
}
