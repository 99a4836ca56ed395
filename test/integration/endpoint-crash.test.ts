import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnDiffgate, type DiffgateProcess } from "../helpers/child-process.js";
import { gql, startTestStack, type TestStack } from "../helpers/test-stack.js";
import { until } from "../helpers/until.js";

let stack: TestStack;
const workers: DiffgateProcess[] = [];

beforeAll(async () => {
  // The API runs here without a worker; workers are separate processes that the test kills.
  // CreateEndpointConfig takes 1.5 s, so a worker can be killed while that call is in flight.
  stack = await startTestStack({ emulator: { operationDelaysMs: { CreateEndpointConfig: 1500 }, endpointCreateMs: 300 } });
});
afterAll(async () => {
  for (const w of workers) await w.stop("SIGKILL");
  await stack?.close();
});

describe("a worker killed mid-deploy", () => {
  it("is replaced by another that resumes without creating a second model, config or endpoint", async () => {
    const res = await gql(stack.baseUrl, `mutation { deployEndpoint(input: { endpointName: "crash", instanceType: "ml.g4dn.xlarge", initialInstanceCount: 1 }) { name } }`, {}, { key: stack.adminKey });
    expect(res.body.errors).toBeUndefined();

    const first = spawnDiffgate({ ...stack.childEnv, ROLE: "worker", LOG_LEVEL: "warn" });
    workers.push(first);
    await until("CreateEndpointConfig to be in flight", () => (stack.emulator.calls("CreateEndpointConfig").length > 0 ? true : undefined));
    const killed = await first.stop("SIGKILL");
    expect(killed.signal).toBe("SIGKILL");
    expect(stack.emulator.calls("CreateEndpoint")).toHaveLength(0);

    const second = spawnDiffgate({ ...stack.childEnv, ROLE: "worker", LOG_LEVEL: "warn" });
    workers.push(second);
    const endpoint = await until("InService", async () => {
      const r = await gql(stack.baseUrl, `{ endpoint(name: "esd-async-crash") { status failureReason } }`, {}, { key: stack.adminKey });
      const e = r.body.data?.endpoint;
      if (e?.status === "Failed") throw new Error(`deploy failed: ${e.failureReason}`);
      return e?.status === "InService" ? e : undefined;
    });
    expect(endpoint.status).toBe("InService");

    const emu = stack.emulator;
    expect(Object.keys(emu.state.models)).toEqual(["esd-model-async-crash"]);
    expect(Object.keys(emu.state.endpointConfigs)).toEqual(["esd-config-async-crash"]);
    expect(emu.state.endpoints().map((e) => e.name)).toEqual(["esd-async-crash"]);
    expect(emu.calls("CreateModel")).toHaveLength(1);
    expect(emu.calls("CreateEndpoint")).toHaveLength(1);
    // The second worker found the model made by the first, and looked before creating the config.
    expect(emu.calls("DescribeModel").length).toBeGreaterThanOrEqual(2);
  });
});
