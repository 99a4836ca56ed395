import { createServer } from "node:net";
import { Redis } from "ioredis";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { asDependencyOutage } from "../../src/adapters/dependency-outage.js";
import { DomainError } from "../../src/domain/errors.js";

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** The errors the real clients raise when their server is gone are recognised; others are left alone. */
describe("asDependencyOutage", () => {
  it("Postgres refusing connections (pg's own error) is the database being unavailable", async () => {
    const client = new pg.Client({ host: "127.0.0.1", port: await closedPort(), user: "x", database: "x" });
    const error = await client.connect().then(() => undefined, (e: unknown) => e);
    expect(asDependencyOutage(error)).toMatchObject({ code: "UNAVAILABLE", message: "a service Diffgate depends on could not be reached (ECONNREFUSED); try again in a few seconds" });
  });

  it("a Postgres server shutting down (SQLSTATE 57P01, as TypeORM wraps it) is the database being unavailable", () => {
    const wrapped = Object.assign(new Error("terminating connection due to administrator command"), { name: "QueryFailedError", driverError: Object.assign(new Error("terminating"), { code: "57P01" }) });
    expect(asDependencyOutage(wrapped)?.message).toBe("the database is unavailable (57P01); try again in a few seconds");
  });

  it("Redis gone (ioredis giving up on a command) is Redis being unavailable", async () => {
    const redis = new Redis({ host: "127.0.0.1", port: await closedPort(), maxRetriesPerRequest: 1, retryStrategy: (n) => (n > 3 ? null : 10), lazyConnect: false });
    redis.on("error", () => undefined);
    const error = await redis.get("k").then(() => undefined, (e: unknown) => e);
    redis.disconnect();
    expect(asDependencyOutage(error)?.message).toMatch(/^(Redis is unavailable \((MaxRetriesPerRequestError|connection closed)\)|a service Diffgate depends on could not be reached \(ECONNREFUSED\)); try again in a few seconds$/);
  });

  it("leaves our own faults, client refusals and domain errors alone", () => {
    expect(asDependencyOutage(new TypeError("x is undefined"))).toBeUndefined();
    expect(asDependencyOutage(Object.assign(new Error("Access Denied"), { name: "AccessDenied", $fault: "client", $metadata: { httpStatusCode: 403 } }))).toBeUndefined();
    expect(asDependencyOutage(Object.assign(new Error("duplicate key"), { name: "QueryFailedError", driverError: { code: "23505" } }))).toBeUndefined();
    expect(asDependencyOutage(DomainError.badInput("no"))).toBeUndefined();
    expect(asDependencyOutage(null)).toBeUndefined();
  });
});
