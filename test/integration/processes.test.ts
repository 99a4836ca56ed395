import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { createDataSource, MIGRATIONS } from "../../src/adapters/db/data-source.js";
import { spawnDiffgate } from "../helpers/child-process.js";
import { createTestDatabase, TEST_REDIS_URL, type TestDatabase } from "../helpers/test-database.js";
import { rest, startTestStack } from "../helpers/test-stack.js";

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe("two processes starting together", () => {
  it("apply each migration once and bootstrap one admin", async () => {
    const db: TestDatabase = await createTestDatabase();
    cleanups.push(db.drop);
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "diffgate-race-"));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    // Reuse a test stack only for its object store and emulator; both processes get the fresh database.
    const stack = await startTestStack();
    cleanups.push(stack.close);
    // No API_KEY: the admin key is generated, so that we can see which process bootstrapped.
    const { API_KEY: _configuredKey, ...shared } = stack.childEnv;
    const env = { ...shared, DATABASE_URL: db.url, ROLE: "worker", DATA_DIR: dataDir };
    const a = spawnDiffgate(env);
    const b = spawnDiffgate(env);
    await Promise.all([a.waitFor(/worker: \d+ concurrent jobs/), b.waitFor(/worker: \d+ concurrent jobs/)]);
    await Promise.all([a.stop(), b.stop()]);

    const ds = createDataSource(db.url);
    await ds.initialize();
    try {
      const migrations: Array<{ name: string }> = await ds.query(`SELECT name FROM schema_migrations`);
      expect(migrations.map((m) => m.name)).toEqual(MIGRATIONS.map((m) => new m().name));
      const users: Array<{ username: string }> = await ds.query(`SELECT username FROM users`);
      expect(users).toEqual([{ username: "admin" }]);
      const keys: Array<{ n: number }> = await ds.query(`SELECT count(*)::int AS n FROM api_keys`);
      expect(keys[0]!.n).toBe(1);
      // Exactly one of the two printed the generated key.
      const printed = [a.stdout(), b.stdout()].filter((out) => /admin API key \(shown once/.test(out));
      expect(printed).toHaveLength(1);
      // The migration matches the entities: nothing left for the schema builder to do.
      expect((await ds.driver.createSchemaBuilder().log()).upQueries.map((q) => q.query)).toEqual([]);
    } finally {
      await ds.destroy();
    }
  });
});

describe("npm start on embedded defaults", () => {
  it("starts with nothing configured, keeps its data across a restart, and stops on SIGTERM within 10 s", async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), "diffgate-embedded-"));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    // No DATABASE_URL, S3_* or SAGEMAKER_*: embedded Postgres (as root too), s3rver and the emulator.
    const env = { DATA_DIR: dataDir, PORT: "0", REDIS_URL: TEST_REDIS_URL, LOG_LEVEL: "warn", QUEUE_PREFIX: `emb${Date.now()}` };

    const first = spawnDiffgate(env);
    const [, base1] = (await first.waitFor(/REST:\s+(http:\/\/\S+?)\/\s/, 90_000)) as RegExpMatchArray;
    await first.waitFor(/health:/);
    const keyFile = path.join(dataDir, "admin-api-key");
    const key = (await readFile(keyFile, "utf8")).trim();
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect(first.stdout()).toContain(key);
    expect((await rest(base1!, "GET", "/ping", { key })).status).toBe(200);
    expect((await rest(base1!, "GET", "/readyz")).status).toBe(200);
    const graphiql = await fetch(`${base1}/graphiql`);
    expect(graphiql.status).toBe(200);
    expect(await graphiql.text()).toContain("Diffgate GraphiQL");
    const created = await rest(base1!, "POST", "/users", { key, body: { username: "persisted", password: "persisted-pass", roles: [] } });
    expect(created.status).toBe(201);
    // An open graphql-ws connection is closed with 1001 (going away) by the shutdown.
    const socket = new WebSocket(`${base1!.replace(/^http/, "ws")}/graphql`, "graphql-transport-ws");
    const acked = new Promise<void>((resolve) => socket.on("message", (m) => JSON.parse(m.toString()).type === "connection_ack" && resolve()));
    const closed = new Promise<number>((resolve) => socket.on("close", (code) => resolve(code)));
    socket.on("open", () => socket.send(JSON.stringify({ type: "connection_init", payload: { "x-api-key": key } })));
    await acked;
    const stopped = await first.stop("SIGTERM");
    expect(stopped.code).toBe(0);
    expect(stopped.ms).toBeLessThan(10_000);
    expect(await closed).toBe(1001);

    const second = spawnDiffgate(env);
    const [, base2] = (await second.waitFor(/REST:\s+(http:\/\/\S+?)\/\s/, 90_000)) as RegExpMatchArray;
    expect(second.stdout()).not.toContain(key);
    expect(second.stdout()).toContain(`admin API key: in ${keyFile}`);
    const users = await rest(base2!, "GET", "/users", { key });
    expect(users.status).toBe(200);
    expect(users.body.data.users.map((u: { username: string }) => u.username)).toEqual(["admin", "persisted"]);
    const stopped2 = await second.stop("SIGTERM");
    expect(stopped2.code).toBe(0);
    expect(stopped2.ms).toBeLessThan(10_000);
  });
});

describe("configuration", () => {
  it("refuses to start on bad values, listing every problem", async () => {
    const proc = spawnDiffgate({ PORT: "eighty", ROLE: "boss", LOG_LEVEL: "loud", DATABASE_URL: "mysql://x", DATA_DIR: os.tmpdir() });
    const { code } = await proc.exited;
    expect(code).toBe(2);
    const err = proc.stderr();
    for (const key of ["PORT", "ROLE", "LOG_LEVEL", "DATABASE_URL"]) expect(err).toContain(`${key}:`);
    expect(err).not.toMatch(/\n\s+at /); // no stack trace
  });
});
