import { InvokeEndpointAsyncCommand } from "@aws-sdk/client-sagemaker-runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnWorker, type DiffgateProcess } from "../helpers/child-process.js";
import { rest, startTestStack, type TestStack } from "../helpers/test-stack.js";
import { startWebUiDouble } from "../helpers/webui-double.js";
import { until } from "../helpers/until.js";

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

const worker = () => spawnWorker(stack, workers);

const row = async (id: string) =>
  ((await stack.runtime.db.query(`SELECT status, payload_written AS "payloadWritten", invoked, invoke_started_at AS "invokeStartedAt", payload_key AS "payloadKey" FROM inferences WHERE id = $1`, [id])) as Array<{
    status: string;
    payloadWritten: boolean;
    invoked: boolean;
    invokeStartedAt: Date | null;
    payloadKey: string;
  }>)[0]!;
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
    // Let the held request run out: the dead worker's call never became an invocation. The next
    // worker finds no output as evidence and invokes again (once) with the same InferenceId.
    await new Promise((r) => setTimeout(r, 1800));
    expect(invocationsOf(id)).toHaveLength(0);
    worker();
    await finishedOnce(id);
  }, 90_000);

  it("after SageMaker accepted the invocation but before it was recorded: the output is the evidence, no second invocation", async () => {
    const id = await create("crash after accept");
    await until("the invocation to start", async () => ((await row(id)).invokeStartedAt ? true : undefined));
    await workers.at(-1)!.stop("SIGKILL");
    const r = await row(id);
    expect(r).toMatchObject({ status: "QUEUED", payloadWritten: true, invoked: false });
    // What the dead worker's call would have done had SageMaker taken it before the worker died.
    await stack.runtime.sagemaker.runtime.send(new InvokeEndpointAsyncCommand({ EndpointName: endpoint, InputLocation: `s3://diffgate-test/${r.payloadKey}`, InferenceId: id, ContentType: "application/json" }));
    const output = `sagemaker_output/${endpoint}/${id}.out`;
    await until("the output document", async () => ((await stack.runtime.storage.head(output)) ? true : undefined));
    worker();
    const done = await until("the job to finish", async () => {
      const res = await rest(stack.baseUrl, "GET", `/inferences/${id}`, { key: stack.adminKey });
      return ["succeed", "failed", "cancelled"].includes(res.body.data?.status) ? res : undefined;
    });
    expect(done.body.data).toMatchObject({ status: "succeed", image_names: ["image_0.png"] });
    expect(invocationsOf(id)).toHaveLength(1);
    const events = await stack.runtime.events.readAfter(id, 0);
    expect(events.find((e) => e.type === "dispatched")!.data).toMatchObject({ recovered: expect.stringContaining("accepted before the worker stopped") });
    expect(events.map((e) => e.type)).not.toContain("redispatched");
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

describe("a worker killed while a WebUI server runs its job", () => {
  it("the next worker interrupts the orphaned run (it is this job's) and runs the job again, once", async () => {
    // 150 steps at 100 ms: the orphaned run lasts 15 s, well past a takeover (lock 2 s + stalled check 2 s) even on a loaded machine.
    const gpu = await startWebUiDouble({ stepMs: 100 });
    try {
      const reg = await rest(stack.baseUrl, "POST", "/endpoints/webui", { key: stack.adminKey, body: { name: "crash-gpu", base_url: gpu.url } });
      expect(reg.body.data.endpoint_status).toBe("InService");
      if (!workers.some((w) => w.child.exitCode === null && w.child.signalCode === null)) worker();
      const res = await rest(stack.baseUrl, "POST", "/inferences", { key: stack.adminKey, body: { sagemaker_endpoint_name: "webui-crash-gpu", task_type: "txt2img", prompt: "orphan", steps: 150, width: 64, height: 64, seed: 5 } });
      expect(res.status).toBe(202);
      const id = res.body.data.inference_id as string;
      await until("the server to run it", async () => (gpu.runningTaskId() === id ? true : undefined));
      // The next worker is up before the first dies, so that it takes over while the orphan still runs.
      const running = workers.filter((w) => w.child.exitCode === null && w.child.signalCode === null);
      const next = worker();
      await next.waitFor(/worker: \d+ concurrent jobs/);
      for (const w of running) await w.stop("SIGKILL");
      // The server goes on with the orphaned request; the next worker must not wait for nor keep it.
      expect(gpu.runningTaskId()).toBe(id);
      const done = await until("the job to finish", async () => {
        const r = await rest(stack.baseUrl, "GET", `/inferences/${id}`, { key: stack.adminKey });
        return ["succeed", "failed", "cancelled"].includes(r.body.data?.status) ? r : undefined;
      });
      expect(done.body.data).toMatchObject({ status: "succeed", image_names: ["image_0.png"] });
      const runs = gpu.requests.filter((r) => r.path === "/sdapi/v1/txt2img" && (r.body as { force_task_id?: string }).force_task_id === id);
      expect(runs).toHaveLength(2);
      expect(gpu.interrupts.filter((i) => i.runningTaskId === id)).toHaveLength(1);
      expect(gpu.interrupts.filter((i) => i.runningTaskId !== id)).toHaveLength(0);
      const types = (await stack.runtime.events.readAfter(id, 0)).map((e) => e.type);
      expect(types.filter((t) => t === "redispatched")).toHaveLength(1);
      expect(types.filter((t) => ["succeeded", "failed", "cancelled"].includes(t))).toEqual(["succeeded"]);
    } finally {
      await gpu.close();
    }
  }, 90_000);
});
