import { createHash } from "node:crypto";

const NAMESPACE = Buffer.from("9b7e1c0a4f3d4e2a8c6b5a4f3e2d1c0b", "hex");

/** A name-based (v5-style) UUID: the same name always gives the same id (ids a retry must find again). */
export function nameBasedUuid(name: string): string {
  const b = createHash("sha1").update(Buffer.concat([NAMESPACE, Buffer.from(name, "utf8")])).digest().subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x50;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
