import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { gql, hexUsername, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";

let stack: TestStack;
let base: string;
let admin: string;
let bobKey: string;
let bobKeyId: string;

/** Opens a graphql-ws socket, sends connection_init with `payload`, resolves with the ack or the close code. */
function wsHandshake(url: string, payload: Record<string, unknown> | undefined): Promise<{ acked: boolean; closeCode?: number }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, "graphql-transport-ws");
    const timer = setTimeout(() => reject(new Error("no answer to connection_init")), 10_000);
    socket.on("open", () => socket.send(JSON.stringify({ type: "connection_init", ...(payload ? { payload } : {}) })));
    socket.on("message", (data) => {
      if (JSON.parse(data.toString()).type === "connection_ack") {
        clearTimeout(timer);
        socket.close(1000);
        resolve({ acked: true });
      }
    });
    socket.on("close", (code) => {
      clearTimeout(timer);
      resolve({ acked: false, closeCode: code });
    });
    socket.on("error", reject);
  });
}

beforeAll(async () => {
  stack = await startTestStack();
  base = stack.baseUrl;
  admin = stack.adminKey;
  const role = await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Designer", permissions: ["inference:all", "checkpoint:list"] } });
  expect(role.status).toBe(201);
  const created = await rest(base, "POST", "/users", { key: admin, body: { username: "bob", password: "correct horse battery", roles: ["Designer"] } });
  expect(created.status).toBe(201);
  const key = await gql(base, `mutation { createApiKey(input: { name: "bob's key", username: "bob" }) { apiKey key { id owner actForOthers } } }`, {}, { key: admin });
  expect(key.body.errors).toBeUndefined();
  bobKey = key.body.data.createApiKey.apiKey;
  bobKeyId = key.body.data.createApiKey.key.id;
  expect(key.body.data.createApiKey.key).toMatchObject({ owner: "bob", actForOthers: false });
});

afterAll(async () => {
  await stack?.close();
});

describe("API keys", () => {
  it("refuses a request without credentials with 401, and an unknown key with 403", async () => {
    const none = await rest(base, "GET", "/ping");
    expect(none.status).toBe(401);
    expect(none.body).toMatchObject({ statusCode: 401, message: expect.stringContaining("x-api-key") });
    const wrong = await rest(base, "GET", "/ping", { key: "not-a-key-not-a-key-123" });
    expect(wrong.status).toBe(403);
    expect(wrong.body.statusCode).toBe(403);
    const ok = await rest(base, "GET", "/ping", { key: admin });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ statusCode: 200, message: "pong" });
  });

  it("stops accepting a key once it is revoked", async () => {
    const created = await gql(base, `mutation { createApiKey(input: { name: "temp" }) { apiKey key { id } } }`, {}, { key: bobKey });
    const temp = created.body.data.createApiKey.apiKey as string;
    expect((await rest(base, "GET", "/ping", { key: temp })).status).toBe(200);
    const revoked = await gql(base, `mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }`, { id: created.body.data.createApiKey.key.id }, { key: bobKey });
    expect(revoked.body.data.revokeApiKey.revokedAt).toBeTruthy();
    expect((await rest(base, "GET", "/ping", { key: temp })).status).toBe(403);
    expect((await gql(base, "{ me { username } }", {}, { key: temp })).body.errors?.[0]?.extensions?.code).toBe("FORBIDDEN");
  });

  it("stores keys and passwords only as hashes", async () => {
    const keys: Array<{ key_hash: string }> = await stack.runtime.db.query(`SELECT key_hash FROM api_keys`);
    expect(keys.length).toBeGreaterThan(1);
    for (const k of keys) {
      expect(k.key_hash).toMatch(/^[0-9a-f]{64}$/);
      expect(k.key_hash).not.toContain(bobKey);
    }
    const [bob] = (await stack.runtime.db.query(`SELECT password_hash FROM users WHERE username = 'bob'`)) as Array<{ password_hash: string }>;
    expect(bob!.password_hash).toMatch(/^scrypt\$32768\$8\$1\$/);
    expect(bob!.password_hash).not.toContain("correct horse");
  });
});

describe("users and roles over REST", () => {
  it("never returns passwords, even with show_password", async () => {
    const res = await rest(base, "GET", "/users?show_password=True", { key: admin });
    expect(res.status).toBe(200);
    const bob = res.body.data.users.find((u: { username: string }) => u.username === "bob");
    expect(bob).toMatchObject({ username: "bob", roles: ["Designer"], creator: "admin", password: "********" });
    expect(res.text).not.toContain("correct horse");
    expect(res.text).not.toContain("scrypt");
    expect(res.body.data).toMatchObject({ previous_evaluated_key: "not_applicable", last_evaluated_key: "not_applicable" });
  });

  it("lets a user without user permissions see only themselves and manage nobody", async () => {
    const list = await rest(base, "GET", "/users", { key: bobKey });
    expect(list.body.data.users.map((u: { username: string }) => u.username)).toEqual(["bob"]);
    const create = await rest(base, "POST", "/users", { key: bobKey, body: { username: "mallory", password: "12345678", roles: [] } });
    expect(create.status).toBe(403);
    const del = await rest(base, "DELETE", "/users", { key: bobKey, body: { user_name_list: ["admin"] } });
    expect(del.status).toBe(403);
    const roles = await rest(base, "GET", "/roles", { key: bobKey });
    expect(roles.body.data.roles.map((r: { role_name: string }) => r.role_name)).toEqual(["Designer"]);
  });

  it("treats initial:true as granting nothing", async () => {
    // Upstream let anyone with the key create an all-powerful user this way.
    const escalate = await rest(base, "POST", "/users", { key: bobKey, bearer: hexUsername("bob"), body: { initial: true, username: "eve", password: "12345678", roles: [], creator: "bob" } });
    expect(escalate.status).toBe(403);
    const users = await rest(base, "GET", "/users", { key: admin });
    expect(users.body.data.users.map((u: { username: string }) => u.username)).not.toContain("eve");
    const roles = await rest(base, "GET", "/roles", { key: admin });
    expect(roles.body.data.roles.find((r: { role_name: string }) => r.role_name === "IT Operator").permissions).toHaveLength(6);
    // The extension's bootstrap call for an existing user is a harmless no-op.
    const again = await rest(base, "POST", "/users", { key: bobKey, body: { initial: true, username: "bob", password: "whatever1", roles: [], creator: "bob" } });
    expect(again.status).toBe(201);
    expect(again.body.data.user).toEqual({ username: "bob", roles: ["Designer"] });
    expect((await gql(base, "{ me { roles } }", {}, { key: bobKey })).body.data.me.roles).toEqual(["Designer"]);
  });

  it("refuses a body that claims another creator", async () => {
    const res = await rest(base, "POST", "/roles", { key: bobKey, body: { role_name: "X", permissions: ["inference:list"], creator: "admin" } });
    expect(res.status).toBe(403);
    expect(res.body.message).toContain("creator");
  });

  it("refuses to grant permissions the creator does not hold", async () => {
    await rest(base, "POST", "/roles", { key: admin, body: { role_name: "RoleMaker", permissions: ["role:create", "user:create", "inference:list"] } });
    await rest(base, "POST", "/users", { key: admin, body: { username: "carol", password: "carolcarol", roles: ["RoleMaker"] } });
    const carolKey = (await gql(base, `mutation { createApiKey(input: { name: "c", username: "carol" }) { apiKey } }`, {}, { key: admin })).body.data.createApiKey.apiKey;
    const tooMuch = await rest(base, "POST", "/roles", { key: carolKey, body: { role_name: "Escalate", permissions: ["user:all"] } });
    expect(tooMuch.status).toBe(403);
    const fine = await rest(base, "POST", "/roles", { key: carolKey, body: { role_name: "Viewer", permissions: ["inference:list"] } });
    expect(fine.status).toBe(201);
    const assignAdmin = await rest(base, "POST", "/users", { key: carolKey, body: { username: "dave", password: "davedave", roles: ["IT Operator"] } });
    expect(assignAdmin.status).toBe(403);
    const deleteDefault = await rest(base, "DELETE", "/roles", { key: admin, body: { role_name_list: ["IT Operator"] } });
    expect(deleteDefault.status).toBe(400);
    expect(deleteDefault.body.message).toBe("cannot delete default role");
  });

  it("validates input and names the field", async () => {
    const badPerm = await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Y", permissions: ["inference:fly"] } });
    expect(badPerm.status).toBe(400);
    expect(badPerm.body.message).toContain("permissions.0");
    const unknown = await rest(base, "POST", "/users", { key: admin, body: { username: "zed", password: "zedzedzed", roles: [], colour: "red" } });
    expect(unknown.status).toBe(400);
    expect(unknown.body.message).toContain("colour");
    const gqlBad = await gql(base, `mutation { createUser(input: { username: "bad name!", password: "12345678" }) { id } }`, {}, { key: admin });
    expect(gqlBad.body.errors?.[0]?.extensions).toMatchObject({ code: "BAD_INPUT", field: "username" });
  });
});

describe("legacy bearer (hex of a username)", () => {
  it("acts for the named user only with a key allowed to act for others", async () => {
    // The first-start admin key may act for others: the WebUI extension logs users in this way.
    const asBob = await gql(base, "{ me { username } }", {}, { key: admin, bearer: hexUsername("bob") });
    expect(asBob.body.data.me.username).toBe("bob");
    const asAdmin = await gql(base, "{ me { username } }", {}, { key: bobKey, bearer: hexUsername("admin") });
    expect(asAdmin.body.errors?.[0]?.extensions?.code).toBe("FORBIDDEN");
    const restAsAdmin = await rest(base, "GET", "/users", { key: bobKey, bearer: hexUsername("admin") });
    expect(restAsAdmin.status).toBe(403);
    const asSelf = await gql(base, "{ me { username } }", {}, { key: bobKey, bearer: hexUsername("bob") });
    expect(asSelf.body.data.me.username).toBe("bob");
  });

  it("refuses bearers that are not uppercase hex, and unknown users", async () => {
    expect((await rest(base, "GET", "/ping", { key: admin, bearer: "61646d696e" })).status).toBe(401);
    expect((await rest(base, "GET", "/ping", { key: admin, bearer: hexUsername("nobody") })).status).toBe(403);
  });
});

describe("sessions", () => {
  it("logs in with a password and uses the token without a key", async () => {
    const login = await gql(base, `mutation { login(username: "bob", password: "correct horse battery") { token expiresAt user { username } } }`);
    expect(login.body.errors).toBeUndefined();
    const token = login.body.data.login.token as string;
    expect((await gql(base, "{ me { username } }", {}, { bearer: token })).body.data.me.username).toBe("bob");
    expect((await rest(base, "GET", "/ping", { bearer: token })).status).toBe(200);
    const tampered = `${token.slice(0, -2)}xx`;
    expect((await rest(base, "GET", "/ping", { bearer: tampered })).status).toBe(401);
    const wrongPassword = await gql(base, `mutation { login(username: "bob", password: "nope") { token } }`);
    expect(wrongPassword.body.errors?.[0]?.extensions?.code).toBe("UNAUTHENTICATED");
    const unknownUser = await gql(base, `mutation { login(username: "ghost", password: "nope") { token } }`);
    expect(unknownUser.body.errors?.[0]?.message).toBe(wrongPassword.body.errors?.[0]?.message);
  });
});

describe("GraphQL access", () => {
  it("lists every user for an admin and only self for others", async () => {
    const all = await gql(base, "{ users { username } }", {}, { key: admin });
    expect(all.body.data.users.map((u: { username: string }) => u.username)).toEqual(expect.arrayContaining(["admin", "bob", "carol"]));
    const own = await gql(base, "{ users { username } }", {}, { key: bobKey });
    expect(own.body.data.users).toEqual([{ username: "bob" }]);
    const noPasswordField = await gql(base, "{ users { username password } }", {}, { key: admin });
    expect(noPasswordField.body.errors?.[0]?.extensions?.code).toBe("GRAPHQL_VALIDATION_FAILED");
  });

  it("lets users revoke only their own keys", async () => {
    const adminKeys = await gql(base, "{ apiKeys { id owner } }", {}, { key: admin });
    const adminsOwn = adminKeys.body.data.apiKeys.find((k: { owner: string }) => k.owner === "admin");
    const res = await gql(base, `mutation($id: ID!) { revokeApiKey(id: $id) { id } }`, { id: adminsOwn.id }, { key: bobKey });
    expect(res.body.errors?.[0]?.extensions?.code).toBe("NOT_FOUND");
    const bobs = await gql(base, "{ apiKeys { id owner } }", {}, { key: bobKey });
    expect(bobs.body.data.apiKeys.every((k: { owner: string }) => k.owner === "bob")).toBe(true);
    expect(bobs.body.data.apiKeys.map((k: { id: string }) => k.id)).toContain(bobKeyId);
  });

  it("keeps the last admin", async () => {
    const res = await gql(base, `mutation { deleteUsers(usernames: ["admin"]) }`, {}, { key: admin });
    expect(res.body.errors?.[0]?.extensions?.code).toBe("BAD_INPUT");
  });
});

describe("graphql-ws authentication", () => {
  it("closes sockets without credentials with 4401, with a bad key with 4403, and acks a good key", async () => {
    expect(await wsHandshake(stack.wsUrl, undefined)).toEqual({ acked: false, closeCode: 4401 });
    expect(await wsHandshake(stack.wsUrl, { "x-api-key": "wrong-key-wrong-key-1234" })).toEqual({ acked: false, closeCode: 4403 });
    expect(await wsHandshake(stack.wsUrl, { "x-api-key": bobKey, authorization: `Bearer ${hexUsername("admin")}` })).toEqual({ acked: false, closeCode: 4403 });
    expect(await wsHandshake(stack.wsUrl, { "x-api-key": bobKey })).toEqual({ acked: true });
    expect(await wsHandshake(stack.wsUrl, { apiKey: admin })).toEqual({ acked: true });
  });
});
