import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

/**
 * Seals small secrets (a WebUI server's `--api-auth` password) for storage: AES-256-GCM with a fresh
 * nonce each time, `v1.<nonce>.<tag>.<ciphertext>` in base64url. The key is CREDENTIALS_KEY, or one
 * derived (HKDF-SHA256) from the session secret when that is unset — then a database dump alone
 * still reveals nothing, but whoever holds the session secret holds the key too (docs/access.md).
 */
export class CredentialSealer {
  private readonly key: Buffer;

  constructor(keyMaterial: { key: Buffer } | { sessionSecret: string }) {
    this.key =
      "key" in keyMaterial
        ? keyMaterial.key
        : Buffer.from(hkdfSync("sha256", Buffer.from(keyMaterial.sessionSecret, "utf8"), Buffer.from("diffgate"), Buffer.from("endpoint-credentials v1"), 32));
    if (this.key.length !== 32) throw new Error("the credentials key must be 32 bytes");
  }

  seal(plain: string): string {
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.key, nonce);
    const body = Buffer.concat([cipher.update(plain, "utf8"), cipher.final()]);
    return ["v1", nonce, cipher.getAuthTag(), body].map((p) => (typeof p === "string" ? p : p.toString("base64url"))).join(".");
  }

  /** Throws when the text was not sealed with this key (changed key, tampered row). */
  open(sealed: string): string {
    const [version, nonce, tag, body] = sealed.split(".");
    if (version !== "v1" || !nonce || !tag || body === undefined) throw new Error("not a sealed credential");
    const decipher = createDecipheriv("aes-256-gcm", this.key, Buffer.from(nonce, "base64url"));
    decipher.setAuthTag(Buffer.from(tag, "base64url"));
    return Buffer.concat([decipher.update(Buffer.from(body, "base64url")), decipher.final()]).toString("utf8");
  }
}
