import { createHash, randomBytes } from "node:crypto";

const KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** A new API key: "dg_" and 32 base62 characters (~190 bits), within upstream's `[A-Za-z0-9_-]` key shape. */
export function generateApiKey(): string {
  const bytes = randomBytes(64);
  let out = "";
  for (const b of bytes) {
    if (b >= 248) continue; // 248 = 4 * 62: drop the remainder to stay unbiased
    out += KEY_ALPHABET[b % 62];
    if (out.length === 32) break;
  }
  return out.length === 32 ? `dg_${out}` : generateApiKey();
}

export function hashApiKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

export function apiKeyPrefix(key: string): string {
  return key.slice(0, 8);
}
