import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rest, startTestStack, type TestStack } from "../helpers/test-stack.js";

let stack: TestStack;
let base: string;
let key: string;

beforeAll(async () => {
  stack = await startTestStack({ env: { REST_PREFIX: "/prod", BODY_LIMIT_BYTES: "4096", CORS_ORIGINS: "*" } });
  base = stack.baseUrl;
  key = stack.adminKey;
});
afterAll(async () => stack?.close());

describe("REST wire format", () => {
  it("answers in upstream's envelope with x-api-version, at / and under REST_PREFIX", async () => {
    for (const route of ["/ping", "/prod/ping"]) {
      const res = await rest(base, "GET", route, { key });
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ statusCode: 200, message: "pong" });
      expect(res.headers.get("x-api-version")).toBe("1.3.0");
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      expect(res.headers.get("x-request-id")).toBeTruthy();
    }
    const roles = await rest(base, "GET", "/prod/roles", { key });
    expect(roles.body.data.roles.map((r: { role_name: string }) => r.role_name)).toEqual(["IT Operator"]);
  });

  it("keeps the caller's request id", async () => {
    const res = await rest(base, "GET", "/ping", { key, headers: { "x-request-id": "client-req-42" } });
    expect(res.headers.get("x-request-id")).toBe("client-req-42");
    const bad = await rest(base, "GET", "/ping", { key, headers: { "x-request-id": "bad id with spaces" } });
    expect(bad.headers.get("x-request-id")).not.toBe("bad id with spaces");
  });

  it("answers unknown routes with a JSON 404", async () => {
    const res = await rest(base, "GET", "/no/such/route", { key });
    expect(res.status).toBe(404);
    expect(res.body).toEqual({ statusCode: 404, message: "no route GET /no/such/route" });
  });

  it("says when the body is not JSON, not an object, or too large", async () => {
    const malformed = await rest(base, "POST", "/roles", { key, rawBody: '{"role_name": ' });
    expect(malformed.status).toBe(400);
    expect(malformed.body.message).toMatch(/not valid JSON/);
    const array = await rest(base, "POST", "/roles", { key, rawBody: "[1,2]" });
    expect(array.status).toBe(400);
    expect(array.body.message).toBe("the request body must be a JSON object");
    const huge = await rest(base, "POST", "/roles", { key, body: { role_name: "big", permissions: ["inference:all"], pad: "x".repeat(10_000) } });
    expect(huge.status).toBe(413);
    expect(huge.body).toMatchObject({ statusCode: 413, message: expect.stringContaining("4096") });
    // Like upstream, any Content-Type (or none) is read as JSON.
    const text = await rest(base, "POST", "/roles", { key, rawBody: "hello", headers: { "content-type": "text/plain" } });
    expect(text.status).toBe(400);
    expect(text.body.message).toMatch(/not valid JSON/);
    const plainJson = await rest(base, "POST", "/roles", { key, rawBody: JSON.stringify({ role_name: "Plain", permissions: ["inference:list"] }), headers: { "content-type": "text/plain" } });
    expect(plainJson.status).toBe(201);
  });

  it("checks credentials before reading a body", async () => {
    const res = await rest(base, "POST", "/roles", { rawBody: "{broken" });
    expect(res.status).toBe(401);
  });

  it("answers CORS preflights without credentials and never pairs * with credentials", async () => {
    const res = await fetch(`${base}/users`, { method: "OPTIONS", headers: { origin: "https://ui.example.com", "access-control-request-method": "POST", "access-control-request-headers": "x-api-key,content-type" } });
    expect(res.status).toBeLessThan(300);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("access-control-allow-credentials")).toBeNull();
    expect(res.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("x-api-key");
    const get = await fetch(`${base}/ping`, { headers: { origin: "https://ui.example.com", "x-api-key": key } });
    expect(get.headers.get("access-control-allow-origin")).toBe("*");
    expect(get.headers.get("access-control-expose-headers")).toContain("x-api-version");
  });

  it("never answers bad input with a 5xx", async () => {
    const bodies: Array<[string, string, string]> = [
      ["POST", "/users", "null"],
      ["POST", "/users", '"str"'],
      ["POST", "/users", "{}"],
      ["POST", "/users", '{"username": 5, "password": []}'],
      ["POST", "/users", '{"username": "ok", "roles": "notalist"}'],
      ["POST", "/users", '{"username": "ok", "password": "12345678", "roles": ["nope"]}'],
      ["POST", "/users", '{"username": "' + "a".repeat(500) + '"}'],
      ["DELETE", "/users", '{"user_name_list": []}'],
      ["DELETE", "/users", '{"user_name_list": [1, {}]}'],
      ["DELETE", "/users", "{}"],
      ["POST", "/roles", '{"role_name": "", "permissions": []}'],
      ["POST", "/roles", '{"role_name": "r", "permissions": "inference:all"}'],
      ["POST", "/roles", '{"role_name": "\\u0000", "permissions": ["inference:all"]}'],
      ["DELETE", "/roles", '{"role_name_list": "IT Operator"}'],
      ["GET", "/users?username=a&username=b", ""],
      ["GET", "/users?username=%00", ""],
      ["GET", "/roles?role=" + "x".repeat(300), ""],
    ];
    for (const [method, route, raw] of bodies) {
      const res = await rest(base, method, route, { key, ...(raw ? { rawBody: raw } : {}) });
      expect(res.status, `${method} ${route} ${raw.slice(0, 40)}`).toBeGreaterThanOrEqual(400);
      expect(res.status, `${method} ${route} ${raw.slice(0, 40)}`).toBeLessThan(500);
      expect(res.body?.message, `${method} ${route}`).toBeTruthy();
      expect(res.text).not.toMatch(/\n\s+at /);
    }
    // Errors name fields as the wire does.
    const missingName = await rest(base, "POST", "/roles", { key, body: { permissions: ["inference:all"] } });
    expect(missingName.body.message).toMatch(/^role_name: /);
    const emptyList = await rest(base, "DELETE", "/users", { key, body: { user_name_list: [] } });
    expect(emptyList.body.message).toMatch(/^user_name_list: /);
  });
});

describe("operations routes", () => {
  it("reports liveness, readiness of every dependency, and Prometheus metrics", async () => {
    expect((await rest(base, "GET", "/healthz")).body).toEqual({ status: "ok" });
    const ready = await rest(base, "GET", "/readyz");
    expect(ready.status).toBe(200);
    expect(ready.body.probes.map((p: { name: string; ok: boolean }) => [p.name, p.ok])).toEqual([
      ["postgres", true],
      ["redis", true],
      ["object-store", true],
    ]);
    await rest(base, "GET", "/ping", { key });
    const metrics = await fetch(`${base}/metrics`);
    const text = await metrics.text();
    expect(text).toMatch(/diffgate_http_request_duration_seconds_bucket\{le="[^"]+",method="GET",route="\/ping",status="200"\}/);
    expect(text).toContain("diffgate_queue_jobs");
    expect(text).toContain("diffgate_job_duration_seconds");
  });
});
