import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnDiffgate, type DiffgateProcess } from "../helpers/child-process.js";
import { rest, startTestStack, type TestStack } from "../helpers/test-stack.js";

let stack: TestStack;
let endpoint: string;
const workers: DiffgateProcess[] = [];

beforeAll(async () => {
  // The API runs here without a worker; workers are separate processes that the test kills.
  // InvokeEndpointAsync is held 1.5 s before SageMaker takes it (a worker killed meanwhile leaves no
  // invocation), and an invocation runs ~2 s, so a worker can be killed in either window.
  stack = await startTestStack({ emulator: { operationDelaysMs: { InvokeEndpointAsync: 1500 }, endpointCreateMs: 200, invocationStartMs: 200, invocationStepMs: 100 } });
}, 60_000);
afterAll(async () => {
  for (const w of workers) await w.stop("SIGKILL");
  await stack?.close();
});

function worker(): DiffgateProcess {
  const w = spawnDiffgate({ ...stack.childEnv, ROLE: "worker", LOG_LEVEL: "warn", PUBLIC_URL: stack.baseUrl });
  workers.push(w);
  return w;
}

async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const row = async (id: string) =>
  ((await stack.runtime.db.query(`SELECT status, payload_written AS "payloadWritten", invoked FROM inferences WHERE id = $1`, [id])) as Array<{ status: string; payloadWritten: boolean; invoked: boolean }>)[0]!;
const invocationsOf = (id: string) => stack.emulator.calls("InvokeEndpointAsync").filter((c) => c.body.InferenceId === id);

async function finishedOnce(id: string) {
  const done = await until("the job to finish", async () => {
    const r = await rest(stack.baseUrl, "GET", `/inferences/${id}`, { key: stack.adminKey });
    return ["succeed", "failed", "cancelled"].includes(r.body.data?.status) ? r : undefined;
  });
  expect(done.body.data).toMatchObject({ status: "succeed", image_names: ["image_0.png"] });
  // Give a late duplicate a chance to show.
  await new Promise((r) => setTimeout(r, 1500));
  const types = (await stack.runtime.events.readAfter(id, 0)).map((e) => e.type);
  expect(types.filter((t) => t === "dispatched")).toHaveLength(1);
  expect(types.filter((t) => ["succeeded", "failed", "cancelled"].includes(t))).toEqual(["succeeded"]);
  expect(types.at(-1)).toBe("succeeded");
  expect(invocationsOf(id)).toHaveLength(1);
  expect(stack.emulator.invocations.list().filter((i) => i.inferenceId === id)).toHaveLength(1);
}

describe("a worker killed during an inference", () => {
  beforeAll(async () => {
    worker();
    const res = await rest(stack.baseUrl, "POST", "/endpoints", { key: stack.adminKey, body: { endpoint_name: "crash", instance_type: "ml.g5.xlarge", initial_instance_count: 1, autoscaling_enabled: false } });
    expect(res.status).toBe(202);
    endpoint = res.body.data.endpoint_name;
    await until("InService", async () => {
      const r = await rest(stack.baseUrl, "GET", "/endpoints", { key: stack.adminKey });
      return r.body.data.endpoints.some((e: any) => e.endpoint_name === endpoint && e.endpoint_status === "InService") ? true : undefined;
    });
  }, 60_000);

  const create = async (prompt: string) => {
    const res = await rest(stack.baseUrl, "POST", "/inferences", { key: stack.adminKey, body: { sagemaker_endpoint_name: endpoint, task_type: "txt2img", prompt, steps: 20, width: 64, height: 64 } });
    expect(res.status).toBe(202);
    return res.body.data.inference_id as string;
  };

  it("between the payload write and the invocation: another worker invokes once and the job finishes once", async () => {
    const id = await create("crash before invoke");
    await until("the payload to be written", async () => ((await row(id)).payloadWritten ? true : undefined));
    const killed = await workers.at(-1)!.stop("SIGKILL");
    expect(killed.signal).toBe("SIGKILL");
    expect(await row(id)).toMatchObject({ status: "QUEUED", payloadWritten: true, invoked: false });
    // Let the held request run out: the dead worker's call never became an invocation.
    await new Promise((r) => setTimeout(r, 1800));
    expect(invocationsOf(id)).toHaveLength(0);
    worker();
    await finishedOnce(id);
  }, 90_000);

  it("between the invocation and the result: another worker collects it once, without invoking again", async () => {
    const id = await create("crash after invoke");
    await until("the job to be running", async () => (["DISPATCHED", "RUNNING"].includes((await row(id)).status) ? true : undefined));
    expect(invocationsOf(id)).toHaveLength(1);
    await workers.at(-1)!.stop("SIGKILL");
    expect(["DISPATCHED", "RUNNING"]).toContain((await row(id)).status);
    worker();
    await finishedOnce(id);
  }, 90_000);
});
