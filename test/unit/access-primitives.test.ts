import { describe, expect, it } from "vitest";
import { apiKeyPrefix, generateApiKey, hashApiKey } from "../../src/adapters/security/api-key-codec.js";
import { hashPassword, verifyPassword } from "../../src/adapters/security/password-hasher.js";
import { SessionTokens } from "../../src/adapters/security/session-tokens.js";
import { ADMIN_ROLE_PERMISSIONS, ALL_PERMISSIONS, PermissionSet } from "../../src/domain/permissions.js";

describe("permissions", () => {
  it("has upstream's 6 resources x 3 actions", () => {
    expect(ALL_PERMISSIONS).toHaveLength(18);
    expect(ADMIN_ROLE_PERMISSIONS).toEqual(["train:all", "checkpoint:all", "inference:all", "sagemaker_endpoint:all", "user:all", "role:all"]);
  });

  it("lets `all` imply create and list, and nothing else", () => {
    const p = new PermissionSet(["inference:all", "checkpoint:list", "bogus", "user:nope"]);
    expect(p.allows("inference", "create")).toBe(true);
    expect(p.allows("inference", "list")).toBe(true);
    expect(p.allows("checkpoint", "list")).toBe(true);
    expect(p.allows("checkpoint", "create")).toBe(false);
    expect(p.allows("checkpoint", "all")).toBe(false);
    expect(p.allows("user", "list")).toBe(false);
    expect(p.canGrant("inference:create")).toBe(true);
    expect(p.canGrant("checkpoint:all")).toBe(false);
    expect(p.list()).toEqual(["checkpoint:list", "inference:all"]);
  });
});

describe("passwords", () => {
  it("hashes with a fresh salt and verifies only the right password", async () => {
    const a = await hashPassword("correct horse");
    const b = await hashPassword("correct horse");
    expect(a).not.toBe(b);
    expect(a).toMatch(/^scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(await verifyPassword("correct horse", a)).toBe(true);
    expect(await verifyPassword("correct horsE", a)).toBe(false);
    expect(await verifyPassword("correct horse", "plaintext")).toBe(false);
    expect(await verifyPassword("x", "scrypt$abc$8$1$AAAA$AAAA")).toBe(false);
  });
});

describe("API keys", () => {
  it("are random, upstream-shaped, and hashed with sha256", () => {
    const keys = new Set(Array.from({ length: 200 }, generateApiKey));
    expect(keys.size).toBe(200);
    for (const k of keys) expect(k).toMatch(/^dg_[A-Za-z0-9]{32}$/);
    expect(hashApiKey("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    expect(apiKeyPrefix("dg_abcdefgh")).toBe("dg_abcde");
  });
});

describe("session tokens", () => {
  it("verify their own, and refuse forged, foreign and expired ones", async () => {
    const tokens = new SessionTokens("x".repeat(48), 60);
    const { token, expiresAt } = await tokens.issue("user-1");
    expect(SessionTokens.looksLikeToken(token)).toBe(true);
    expect(await tokens.verify(token)).toEqual({ userId: "user-1", expiresAt });
    expect(await new SessionTokens("y".repeat(48), 60).verify(token)).toBeUndefined();
    expect(await tokens.verify(`${token}x`)).toBeUndefined();
    const old = await tokens.issue("user-1", new Date(Date.now() - 3600_000));
    expect(await tokens.verify(old.token)).toBeUndefined();
    expect(SessionTokens.looksLikeToken("61646D696E")).toBe(false);
  });
});
