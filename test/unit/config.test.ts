import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config.js";

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe("config", () => {
  it("has the documented defaults with nothing set", () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 8080, host: "127.0.0.1", role: "all", dataDir: path.resolve("./data"), logLevel: "info", awsRegion: "us-east-1", restPrefix: undefined, apiKey: undefined, corsOrigins: "*" });
    expect(c.s3).toEqual({ bucket: "diffgate", endpoint: undefined, forcePathStyle: true, embedded: true, credentials: undefined });
    expect(c.databaseUrl).toBeUndefined();
    expect(c.redisUrl).toBeUndefined();
  });

  it("treats empty strings as unset", () => {
    expect(loadConfig({ PORT: "", ROLE: " ", REST_PREFIX: "" })).toMatchObject({ port: 8080, role: "all", restPrefix: undefined });
  });

  it("lists every problem at once, naming each variable", () => {
    const found = problems({ PORT: "99999", HOST: "", ROLE: "boss", DATABASE_URL: "mysql://db", REDIS_URL: "http://x", S3_BUCKET: "Bad_Bucket", AWS_REGION: "mars", API_KEY: "short", REST_PREFIX: "prod/", LOG_LEVEL: "loud", WORKER_CONCURRENCY: "0" });
    const keys = found.map((p) => p.split(":")[0]);
    expect(keys.sort()).toEqual(["API_KEY", "AWS_REGION", "DATABASE_URL", "LOG_LEVEL", "PORT", "REDIS_URL", "REST_PREFIX", "ROLE", "S3_BUCKET", "WORKER_CONCURRENCY"].sort());
  });

  it("never echoes secrets or URLs that may hold passwords", () => {
    const found = problems({ API_KEY: "sekrit!", DATABASE_URL: "mysql://user:hunter2@db/x", SESSION_SECRET: "tooshort" });
    const text = found.join("\n");
    expect(text).not.toContain("sekrit");
    expect(text).not.toContain("hunter2");
    expect(text).not.toContain("tooshort");
  });

  it("checks combinations and CORS origins", () => {
    expect(problems({ S3_ENDPOINT: "http://minio:9000" })).toEqual(["S3_BUCKET: must be set when S3_ENDPOINT is set"]);
    expect(problems({ S3_BUCKET: "bkt", S3_ACCESS_KEY_ID: "minio" })).toEqual([expect.stringContaining("S3_SECRET_ACCESS_KEY")]);
    expect(loadConfig({ S3_BUCKET: "bkt", S3_ACCESS_KEY_ID: "minio", S3_SECRET_ACCESS_KEY: "secret" }).s3.credentials).toEqual({ accessKeyId: "minio", secretAccessKey: "secret" });
    expect(problems({ CORS_ORIGINS: "https://a.example.com, https://b.example.com/path" })).toEqual([expect.stringContaining("https://b.example.com/path")]);
    expect(loadConfig({ CORS_ORIGINS: "https://a.example.com,https://b.example.com" }).corsOrigins).toEqual(["https://a.example.com", "https://b.example.com"]);
  });

  it("reads a real deployment's settings", () => {
    const c = loadConfig({ S3_BUCKET: "my-bucket", ROLE: "worker", REST_PREFIX: "/prod", API_KEY: "09876543210987654321", PORT: "9000", WORKER_CONCURRENCY: "4" });
    expect(c).toMatchObject({ role: "worker", restPrefix: "/prod", apiKey: "09876543210987654321", port: 9000, workerConcurrency: 4 });
    expect(c.s3).toMatchObject({ bucket: "my-bucket", embedded: false });
  });
});
