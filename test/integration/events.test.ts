import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client } from "graphql-ws";
import WebSocket from "ws";
import { randomUUID } from "node:crypto";
import { spawnDiffgate, type DiffgateProcess } from "../helpers/child-process.js";
import { gql, startTestStack, type TestStack } from "../helpers/test-stack.js";

let stack: TestStack;
let worker: DiffgateProcess;

interface Ev {
  jobId: string;
  seq: number;
  type: string;
  data: Record<string, unknown>;
  terminal: boolean;
}

function wsClient(key: string): Client {
  return createClient({ url: stack.wsUrl, webSocketImpl: WebSocket, connectionParams: { "x-api-key": key }, retryAttempts: 0, lazy: true });
}

/** Collects a jobEvents subscription until it completes (after the terminal event) or `stopAfter` events. */
function collect(client: Client, jobId: string, after: number, stopAfter = Infinity): Promise<Ev[]> {
  return new Promise((resolve, reject) => {
    const seen: Ev[] = [];
    const dispose = client.subscribe<{ jobEvents: Ev }>(
      { query: `subscription($id: ID!, $after: Int) { jobEvents(jobId: $id, after: $after) { jobId seq type data terminal } }`, variables: { id: jobId, after } },
      {
        next: (msg) => {
          if (msg.errors) return reject(new Error(JSON.stringify(msg.errors)));
          seen.push(msg.data!.jobEvents);
          if (seen.length >= stopAfter) {
            dispose();
            resolve(seen);
          }
        },
        error: (e) => reject(e instanceof Error ? e : new Error(JSON.stringify(e))),
        complete: () => resolve(seen),
      },
    );
  });
}

beforeAll(async () => {
  // This process serves the API without a worker; a second process (ROLE=worker) runs the jobs.
  stack = await startTestStack();
  worker = spawnDiffgate({ ...stack.childEnv, ROLE: "worker", LOG_LEVEL: "warn" });
  await worker.waitFor(/worker: \d+ concurrent jobs/);
});

afterAll(async () => {
  await worker?.stop();
  await stack?.close();
});

describe("job events across processes", () => {
  it("streams a job run by another process, in order, then replays from a cursor without gaps or duplicates", async () => {
    const client = wsClient(stack.adminKey);
    const started = await gql(stack.baseUrl, "mutation { runSystemCheck { id status } }", {}, { key: stack.adminKey });
    expect(started.body.errors).toBeUndefined();
    const id = started.body.data.runSystemCheck.id as string;

    const all = await collect(client, id, 0);
    expect(all.map((e) => e.seq)).toEqual(all.map((_, i) => i + 1));
    expect(all[0]).toMatchObject({ type: "status", data: { status: "QUEUED" } });
    expect(all[1]).toMatchObject({ type: "status", data: { status: "RUNNING" } });
    // The RUNNING event names the worker process, which is not this one.
    expect(all[1]!.data.workerId).toMatch(new RegExp(`:${worker.child.pid}$`));
    const probes = all.filter((e) => e.type === "probe").map((e) => e.data.name);
    expect(probes.sort()).toEqual(["object-store", "postgres", "redis", "sagemaker"]);
    const last = all.at(-1)!;
    expect(last).toMatchObject({ type: "status", terminal: true, data: { status: "SUCCEEDED" } });

    const replay = await collect(client, id, 3);
    expect(replay.map((e) => e.seq)).toEqual(all.slice(3).map((e) => e.seq));
    expect(replay).toEqual(all.slice(3));

    const check = await gql(stack.baseUrl, `query($id: ID!) { systemCheck(id: $id) { status probes { name ok } finishedAt } }`, { id }, { key: stack.adminKey });
    expect(check.body.data.systemCheck.status).toBe("SUCCEEDED");
    await client.dispose();
  });

  it("delivers live events to a subscriber that joined before they existed, numbered consecutively under concurrent appends", async () => {
    // A stream written directly through the event log of this process, read by a subscriber that
    // started before the later events existed.
    const jobId = randomUUID();
    await stack.runtime.events.transaction(async (_tx, ev) => {
      await ev.openStream(jobId, "system_check", null);
      await ev.append(jobId, { type: "status", data: { status: "QUEUED" } });
    });
    const client = wsClient(stack.adminKey);
    const pending = collect(client, jobId, 0);
    await new Promise((r) => setTimeout(r, 300));
    // 30 concurrent appends: sequence numbers must come out consecutive and unique.
    await Promise.all(Array.from({ length: 30 }, (_, i) => stack.runtime.events.append(jobId, { type: "progress", data: { step: i } })));
    await stack.runtime.events.append(jobId, { type: "status", data: { status: "SUCCEEDED" }, terminal: true });
    const events = await pending;
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 32 }, (_, i) => i + 1));
    expect(new Set(events.filter((e) => e.type === "progress").map((e) => e.data.step)).size).toBe(30);
    await client.dispose();
  });

  it("fills a gap when a live message is lost", async () => {
    const jobId = randomUUID();
    await stack.runtime.events.transaction(async (_tx, ev) => ev.openStream(jobId, "system_check", null));
    const iterator = stack.runtime.events.follow(jobId, 0);
    const first = iterator.next();
    await new Promise((r) => setTimeout(r, 200));
    // Store two events without publishing them (as if the publish after commit had failed) ...
    const db = stack.runtime.db;
    for (const seq of [1, 2]) {
      await db.query(`UPDATE event_streams SET last_seq = $2 WHERE id = $1`, [jobId, seq]);
      await db.query(`INSERT INTO job_events (stream_id, seq, type, data) VALUES ($1, $2, 'progress', '{}')`, [jobId, seq]);
    }
    // ... then a third through the normal path: the follower must yield 1, 2 and 3 in order.
    await stack.runtime.events.append(jobId, { type: "status", data: {}, terminal: true });
    const seqs = [(await first).value!.seq];
    for await (const e of iterator) seqs.push(e.seq);
    expect(seqs).toEqual([1, 2, 3]);
  });

  it("refuses other users' jobs and bad cursors with coded errors", async () => {
    const started = await gql(stack.baseUrl, "mutation { runSystemCheck { id } }", {}, { key: stack.adminKey });
    const id = started.body.data.runSystemCheck.id as string;
    await gql(stack.baseUrl, `mutation { createUser(input: { username: "viewer", password: "viewer-pass" }) { id } }`, {}, { key: stack.adminKey });
    const viewerKey = (await gql(stack.baseUrl, `mutation { createApiKey(input: { name: "v", username: "viewer" }) { apiKey } }`, {}, { key: stack.adminKey })).body.data.createApiKey.apiKey;
    await expect(collect(wsClient(viewerKey), id, 0)).rejects.toThrow(/NOT_FOUND/);
    await expect(collect(wsClient(stack.adminKey), id, -1)).rejects.toThrow(/BAD_INPUT/);
    await expect(collect(wsClient(stack.adminKey), "not-a-uuid", 0)).rejects.toThrow(/jobId/);
  });
});

describe("graphql-ws limits", () => {
  it("refuses a subscription beyond WS_MAX_SUBSCRIPTIONS on one connection (RATE_LIMITED), and takes one again once another ends", async () => {
    const limited = await startTestStack({ env: { WS_MAX_SUBSCRIPTIONS: "3" } });
    const client = createClient({ url: limited.wsUrl, webSocketImpl: WebSocket, connectionParams: { "x-api-key": limited.adminKey }, retryAttempts: 0 });
    const query = `subscription { myInferenceEvents(after: 0) { cursor } }`;
    /** Subscribes; resolves with the errors it is refused with, or "open" once the server has had time to refuse. */
    const attempt = () => {
      let dispose = () => {};
      const outcome = new Promise<unknown>((resolve) => {
        dispose = client.subscribe({ query }, { next: () => undefined, error: (e) => resolve(e), complete: () => resolve("completed") });
        setTimeout(() => resolve("open"), 2000);
      });
      return { outcome, dispose: () => dispose() };
    };
    try {
      const held = [attempt(), attempt(), attempt()];
      expect(await Promise.all(held.map((h) => h.outcome))).toEqual(["open", "open", "open"]);
      const fourth = attempt();
      expect(await fourth.outcome).toEqual([expect.objectContaining({ message: expect.stringContaining("already holds 3 subscriptions"), extensions: { code: "RATE_LIMITED" } })]);
      held[0]!.dispose();
      await new Promise((r) => setTimeout(r, 200));
      expect(await attempt().outcome).toBe("open");
    } finally {
      await client.dispose();
      await limited.close();
    }
  });
});
