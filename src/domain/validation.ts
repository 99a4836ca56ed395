import { z } from "zod";
import { DomainError } from "./errors.js";

/** Parses outside input with a zod schema; the first problem becomes a BAD_INPUT naming the field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, fieldPrefix?: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const pathParts = [...(fieldPrefix ? [fieldPrefix] : []), ...issue.path.map(String)];
  const field = pathParts.join(".") || undefined;
  let message = issue.message;
  if (issue.code === "unrecognized_keys") message = `unknown field(s): ${issue.keys.join(", ")}`;
  throw DomainError.badInput(field ? `${field}: ${message}` : message, field);
}
