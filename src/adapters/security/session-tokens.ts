import { SignJWT, errors as joseErrors, jwtVerify } from "jose";

const ISSUER = "diffgate";
const AUDIENCE = "diffgate-session";

export interface SessionClaims {
  userId: string;
  expiresAt: Date;
}

/** HS256 session tokens. The secret is shared by every api process (config or the database). */
export class SessionTokens {
  private readonly key: Uint8Array;

  constructor(
    secret: string,
    private readonly ttlSeconds: number,
  ) {
    this.key = new TextEncoder().encode(secret);
  }

  async issue(userId: string, now = new Date()): Promise<{ token: string; expiresAt: Date }> {
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + this.ttlSeconds;
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(userId)
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .sign(this.key);
    return { token, expiresAt: new Date(exp * 1000) };
  }

  /** The claims of a valid token, or undefined for anything forged, expired or malformed. */
  async verify(token: string): Promise<SessionClaims | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.key, { issuer: ISSUER, audience: AUDIENCE, algorithms: ["HS256"] });
      if (typeof payload.sub !== "string" || typeof payload.exp !== "number") return undefined;
      return { userId: payload.sub, expiresAt: new Date(payload.exp * 1000) };
    } catch (e) {
      if (e instanceof joseErrors.JOSEError || e instanceof TypeError) return undefined;
      throw e;
    }
  }

  static looksLikeToken(value: string): boolean {
    return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(value);
  }
}
