import { z } from "zod";
import { DomainError } from "./errors.js";

/** Position in a newest-first listing ordered by (created_at, id). */
export interface KeysetCursor {
  createdAt: string;
  id: string;
}

/** The opaque cursor clients pass back as `after`. */
export function encodeKeysetCursor(row: { createdAt: Date; id: string }): string {
  return Buffer.from(JSON.stringify({ createdAt: row.createdAt.toISOString(), id: row.id })).toString("base64url");
}

export function decodeKeysetCursor(raw: string, field = "after"): KeysetCursor {
  try {
    const parsed = JSON.parse(Buffer.from(raw, "base64url").toString("utf8")) as KeysetCursor;
    if (typeof parsed.createdAt !== "string" || Number.isNaN(Date.parse(parsed.createdAt)) || !z.uuid().safeParse(parsed.id).success) throw new Error("shape");
    return parsed;
  } catch {
    throw DomainError.badInput(`${field}: not a cursor returned by this API`, field);
  }
}
