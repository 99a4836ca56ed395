import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeleteEndpointCommand, SageMakerClient } from "@aws-sdk/client-sagemaker";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";
import { collectEvents } from "../helpers/subscription.js";

let stack: TestStack;
let base: string;
let admin: string;

interface Ev {
  seq: number;
  type: string;
  data: Record<string, any>;
  terminal: boolean;
}

async function waitForStatus(name: string, status: string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await gql(base, `query($n: String!) { endpoint(name: $n) { status failureReason currentInstanceCount } }`, { n: name }, { key: admin });
    const e = res.body.data?.endpoint;
    if (e?.status === status) return e;
    if (Date.now() > deadline) throw new Error(`endpoint ${name} is ${JSON.stringify(e ?? res.body.errors)}, not ${status}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function followEndpoint(name: string, until: (e: Ev) => boolean): Promise<Ev[]> {
  return collectEvents<Ev>({ wsUrl: stack.wsUrl, key: admin, query: `subscription($n: String!) { endpointEvents(name: $n) { seq type data terminal } }`, variables: { n: name }, field: "endpointEvents", done: (seen) => until(seen[seen.length - 1]!) }).events;
}

beforeAll(async () => {
  stack = await startTestStack({ worker: true, emulator: { failInstanceTypes: ["ml.g5.24xlarge"] } });
  base = stack.baseUrl;
  admin = stack.adminKey;
});
afterAll(async () => stack?.close());

describe("endpoint deployment", () => {
  it("deploys an async endpoint with scale-to-zero autoscaling, then deletes every part of it", async () => {
    const res = await rest(base, "POST", "/endpoints", {
      key: admin,
      body: { endpoint_name: "sdxl", endpoint_type: "Async", instance_type: "ml.g5.2xlarge", initial_instance_count: "2", autoscaling_enabled: true, assign_to_roles: ["IT Operator"] },
    });
    expect(res.status).toBe(202);
    expect(res.body.message).toBe("Endpoint deployment started: esd-async-sdxl");
    expect(res.body.data).toMatchObject({ endpoint_name: "esd-async-sdxl", endpoint_status: "Creating", endpoint_type: "Async", instance_type: "ml.g5.2xlarge", current_instance_count: "0", autoscaling: true, max_instance_number: 2, min_instance_number: 0, owner_group_or_role: ["IT Operator"], error: null, endTime: null });
    expect(res.body.data.startTime).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$/);

    const events = await followEndpoint("esd-async-sdxl", (e) => e.type === "status" && e.data.status === "InService");
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(events.filter((e) => e.type === "step").map((e) => e.data.step)).toEqual(["model", "config", "endpoint", "autoscaling"]);
    expect(events.at(-2)).toMatchObject({ type: "status", data: { status: "InService", previous: "Creating" } });
    expect(events.at(-1)).toMatchObject({ type: "instances", data: { current: 2, previous: 0 } });

    // Exactly what was sent to SageMaker, Application Auto Scaling and CloudWatch.
    const emu = stack.emulator;
    expect(emu.calls("CreateModel")).toHaveLength(1);
    expect(emu.calls("CreateModel")[0]!.body).toMatchObject({
      ModelName: "esd-model-async-sdxl",
      ExecutionRoleArn: "arn:aws:iam::000000000000:role/DiffgateSageMakerExecution",
      PrimaryContainer: { Image: expect.stringMatching(/aigc-webui-inference:latest$/), ModelDataUrl: "s3://diffgate-test/data/model.tar.gz", Environment: expect.objectContaining({ ENDPOINT_NAME: "esd-async-sdxl" }) },
    });
    expect(emu.calls("CreateEndpointConfig")).toHaveLength(1);
    expect(emu.calls("CreateEndpointConfig")[0]!.body).toMatchObject({
      EndpointConfigName: "esd-config-async-sdxl",
      ProductionVariants: [{ VariantName: "prod", ModelName: "esd-model-async-sdxl", InitialInstanceCount: 2, InstanceType: "ml.g5.2xlarge" }],
      AsyncInferenceConfig: {
        OutputConfig: { S3OutputPath: "s3://diffgate-test/sagemaker_output/esd-async-sdxl/", S3FailurePath: "s3://diffgate-test/sagemaker_output/esd-async-sdxl/failure/" },
        ClientConfig: { MaxConcurrentInvocationsPerInstance: 1 },
      },
    });
    expect(emu.calls("CreateEndpointConfig")[0]!.body.AsyncInferenceConfig).not.toHaveProperty("OutputConfig.NotificationConfig");
    expect(emu.calls("CreateEndpoint").map((c) => c.body)).toEqual([{ EndpointName: "esd-async-sdxl", EndpointConfigName: "esd-config-async-sdxl", Tags: [{ Key: "diffgate:endpoint-id", Value: res.body.data.EndpointDeploymentJobId }] }]);
    expect(emu.calls("RegisterScalableTarget").map((c) => c.body)).toEqual([
      { ServiceNamespace: "sagemaker", ResourceId: "endpoint/esd-async-sdxl/variant/prod", ScalableDimension: "sagemaker:variant:DesiredInstanceCount", MinCapacity: 0, MaxCapacity: 2 },
    ]);
    const policies = emu.calls("PutScalingPolicy").map((c) => c.body);
    expect(policies.map((p) => [p.PolicyName, p.PolicyType])).toEqual([
      ["esd-async-sdxl-backlog-per-instance", "TargetTrackingScaling"],
      ["esd-async-sdxl-wake-from-zero", "StepScaling"],
    ]);
    expect(policies[0]!.TargetTrackingScalingPolicyConfiguration).toMatchObject({ TargetValue: 5, CustomizedMetricSpecification: { MetricName: "ApproximateBacklogSizePerInstance", Dimensions: [{ Name: "EndpointName", Value: "esd-async-sdxl" }] } });
    const alarm = emu.calls("PutMetricAlarm")[0]!.body;
    expect(alarm).toMatchObject({ AlarmName: "esd-async-sdxl-has-backlog-without-capacity", MetricName: "HasBacklogWithoutCapacity", Dimensions: [{ Name: "EndpointName", Value: "esd-async-sdxl" }] });
    expect(alarm.AlarmActions).toEqual([Object.values(emu.state.scalingPolicies).find((p) => p.policyName === "esd-async-sdxl-wake-from-zero")!.policyArn]);

    const listed = await rest(base, "GET", "/endpoints", { key: admin });
    expect(listed.body.data.endpoints[0]).toMatchObject({ endpoint_name: "esd-async-sdxl", endpoint_status: "InService", current_instance_count: "2", status: "success" });
    expect(listed.body.data.endpoints[0].endTime).toMatch(/^\d{4}-/);

    const deletion = followEndpoint("esd-async-sdxl", (e) => e.terminal);
    const del = await rest(base, "DELETE", "/endpoints", { key: admin, body: { endpoint_name_list: ["esd-async-sdxl"] } });
    expect(del.status).toBe(204);
    const deleteEvents = await deletion;
    expect(deleteEvents.filter((e) => e.type === "status").map((e) => e.data.status)).toEqual(["Creating", "InService", "Deleting", "Deleted"]);
    expect(Object.keys(emu.state.models)).toEqual([]);
    expect(Object.keys(emu.state.endpointConfigs)).toEqual([]);
    expect(emu.state.endpoints()).toEqual([]);
    expect(Object.keys(emu.state.scalableTargets)).toEqual([]);
    expect(Object.keys(emu.state.scalingPolicies)).toEqual([]);
    expect(Object.keys(emu.state.alarms)).toEqual([]);
    const after = await rest(base, "GET", "/endpoints", { key: admin });
    expect(after.body.data.endpoints[0]).toMatchObject({ endpoint_status: "Deleted", status: "deleted" });
    // The name is free again.
    const again = await gql(base, `mutation { deployEndpoint(input: { endpointName: "sdxl", instanceType: "ml.g4dn.xlarge", initialInstanceCount: 1 }) { name status } }`, {}, { key: admin });
    expect(again.body.data.deployEndpoint).toEqual({ name: "esd-async-sdxl", status: "Creating" });
    await waitForStatus("esd-async-sdxl", "InService");
  });

  it("fails with SageMaker's reason and removes what was half built", async () => {
    const res = await gql(base, `mutation { deployEndpoint(input: { endpointName: "big", instanceType: "ml.g5.24xlarge", initialInstanceCount: 1 }) { name } }`, {}, { key: admin });
    expect(res.body.errors).toBeUndefined();
    const failed = await waitForStatus("esd-async-big", "Failed");
    expect(failed.failureReason).toMatch(/account-level service limit 'ml\.g5\.24xlarge for endpoint usage' is 0 Instances/);
    const deadline = Date.now() + 5000;
    while ((stack.emulator.state.models["esd-model-async-big"] || stack.emulator.state.endpoint("esd-async-big")) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(stack.emulator.state.models["esd-model-async-big"]).toBeUndefined();
    expect(stack.emulator.state.endpointConfigs["esd-config-async-big"]).toBeUndefined();
    expect(stack.emulator.state.endpoint("esd-async-big")).toBeUndefined();
    const listed = await rest(base, "GET", "/endpoints", { key: admin });
    expect(listed.body.data.endpoints.find((e: { endpoint_name: string }) => e.endpoint_name === "esd-async-big")).toMatchObject({ endpoint_status: "Failed", status: "failed", error: expect.stringContaining("service limit") });
  });

  it("records an endpoint deleted outside Diffgate as drift", async () => {
    await gql(base, `mutation { deployEndpoint(input: { endpointName: "drifty", endpointType: "Real-time", instanceType: "ml.g4dn.2xlarge", initialInstanceCount: 1 }) { name } }`, {}, { key: admin });
    await waitForStatus("esd-real-time-drifty", "InService");
    const sm = new SageMakerClient({ region: "us-east-1" });
    await sm.send(new DeleteEndpointCommand({ EndpointName: "esd-real-time-drifty" }));
    await new Promise((r) => setTimeout(r, 300));
    await stack.runtime.endpoints.reconcile();
    await waitForStatus("esd-real-time-drifty", "Deleted");
    const events = await followEndpoint("esd-real-time-drifty", (e) => e.terminal);
    expect(events.at(-1)).toMatchObject({ type: "status", terminal: true, data: { status: "Deleted", drift: expect.stringContaining("deleted outside Diffgate") } });
    sm.destroy();
  });
});

describe("endpoint input and access", () => {
  it("refuses bad input with 400s that name the field", async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ instance_type: "ml.p4d.24xlarge", initial_instance_count: 1 }, /^instance_type: must be one of/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 0 }, /^initial_instance_count: .*at least 1/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 7 }, /^initial_instance_count: .*at most 6/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: "two" }, /^initial_instance_count: must be a whole number/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 1, endpoint_type: "Serverless" }, /^endpoint_type: Serverless endpoint is not supported yet/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 1, endpoint_name: "a".repeat(21) }, /^endpoint_name: /],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 1, endpoint_name: "bad_name!" }, /^endpoint_name: /],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 1, endpoint_type: "Real-time", autoscaling_enabled: true }, /Autoscaling is not supported for real-time endpoint/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 3, max_instance_number: 2 }, /^initial_instance_count: 3 is above/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 1, custom_docker_image_uri: "docker.io/me/sd:latest" }, /^custom_docker_image_uri: Invalid docker image uri/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 1, assign_to_roles: ["Nobody"] }, /^assign_to_roles: role\(s\) "Nobody" do not exist/],
      [{ instance_type: "ml.g4dn.xlarge", initial_instance_count: 1, gpu: "yes" }, /unknown field\(s\): gpu/],
    ];
    for (const [body, message] of cases) {
      const res = await rest(base, "POST", "/endpoints", { key: admin, body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.message, JSON.stringify(body)).toMatch(message);
    }
    const gqlBad = await gql(base, `mutation { deployEndpoint(input: { instanceType: "ml.x", initialInstanceCount: 1 }) { name } }`, {}, { key: admin });
    expect(gqlBad.body.errors?.[0]?.extensions).toMatchObject({ code: "BAD_INPUT", field: "instanceType" });
    const del = await rest(base, "DELETE", "/endpoints", { key: admin, body: { delete_endpoint_list: ["esd-async-nope"] } });
    expect(del.status).toBe(404);
    expect(del.body.message).toBe('endpoint "esd-async-nope" not found');
    const dup = await rest(base, "POST", "/endpoints", { key: admin, body: { endpoint_name: "sdxl", instance_type: "ml.g4dn.xlarge", initial_instance_count: 1 } });
    expect(dup.status).toBe(409);
  });

  it("limits endpoints to users with sagemaker_endpoint permissions and to their roles", async () => {
    await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Artist", permissions: ["inference:all"] } });
    await rest(base, "POST", "/users", { key: admin, body: { username: "artist", password: "artist-pass", roles: ["Artist"] } });
    const key = (await gql(base, `mutation { createApiKey(input: { name: "a", username: "artist" }) { apiKey } }`, {}, { key: admin })).body.data.createApiKey.apiKey;
    const deploy = await rest(base, "POST", "/endpoints", { key, body: { instance_type: "ml.g4dn.xlarge", initial_instance_count: 1 } });
    expect(deploy.status).toBe(403);
    expect((await rest(base, "GET", "/endpoints", { key })).body.data.endpoints).toEqual([]);
    const del = await rest(base, "DELETE", "/endpoints", { key, body: { endpoint_name_list: ["esd-async-sdxl"] } });
    expect(del.status).toBe(403);
    // Assigned to the Artist role: now visible to the artist, still not deletable by them.
    await gql(base, `mutation { deployEndpoint(input: { endpointName: "shared", instanceType: "ml.g4dn.xlarge", initialInstanceCount: 1, assignToRoles: ["Artist"] }) { name } }`, {}, { key: admin });
    const visible = await rest(base, "GET", "/endpoints", { key });
    expect(visible.body.data.endpoints.map((e: { endpoint_name: string }) => e.endpoint_name)).toEqual(["esd-async-shared"]);
  });
});
