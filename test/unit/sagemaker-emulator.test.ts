import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ApplicationAutoScalingClient, PutScalingPolicyCommand, RegisterScalableTargetCommand } from "@aws-sdk/client-application-auto-scaling";
import {
  CreateEndpointCommand,
  CreateEndpointConfigCommand,
  CreateModelCommand,
  DeleteEndpointCommand,
  DescribeEndpointCommand,
  DescribeModelCommand,
  ListEndpointsCommand,
  SageMakerClient,
} from "@aws-sdk/client-sagemaker";
import { startSageMakerEmulator, type SageMakerEmulator } from "../../src/local/sagemaker-emulator.js";
import { refusal } from "../helpers/aws-refusal.js";

let emulator: SageMakerEmulator;
let sm: SageMakerClient;
let dir: string;
const credentials = { accessKeyId: "emulator", secretAccessKey: "emulator" };
const ROLE = "arn:aws:iam::000000000000:role/Exec";

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "diffgate-emulator-"));
  emulator = await startSageMakerEmulator({ settings: { endpointCreateMs: 100, endpointDeleteMs: 50, stateFile: path.join(dir, "state.json"), failInstanceTypes: ["ml.g5.48xlarge"] } });
  // The SDK is pointed at the emulator the same way the product does it: endpoint override, any credentials.
  sm = new SageMakerClient({ region: "us-east-1", endpoint: emulator.url, credentials, maxAttempts: 1 });
});
afterAll(async () => {
  sm.destroy();
  await emulator.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("SageMaker emulator validation", () => {
  it("refuses bad names, missing members and unknown instance types like SageMaker", async () => {
    const badName = await refusal(sm.send(new CreateModelCommand({ ModelName: "bad_name", ExecutionRoleArn: ROLE, PrimaryContainer: { Image: "img:1" } })));
    expect(badName).toEqual({ name: "ValidationException", status: 400, message: "1 validation error detected: Value 'bad_name' at 'modelName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" });
    const tooLong = await refusal(sm.send(new DescribeEndpointCommand({ EndpointName: "a".repeat(64) })));
    expect(tooLong.message).toContain("Member must have length less than or equal to 63");
    const missing = await refusal(sm.send(new DescribeEndpointCommand({} as never)));
    expect(missing.message).toBe("1 validation error detected: Value null at 'endpointName' failed to satisfy constraint: Member must not be null");
    const two = await refusal(sm.send(new CreateModelCommand({ ModelName: "m-1" } as never)));
    expect(two.message).toMatch(/^2 validation errors detected: Value null at 'executionRoleArn'.*; Value null at 'primaryContainer'/);
    await sm.send(new CreateModelCommand({ ModelName: "m-1", ExecutionRoleArn: ROLE, PrimaryContainer: { Image: "img:1" } }));
    const badType = await refusal(sm.send(new CreateEndpointConfigCommand({ EndpointConfigName: "c-1", ProductionVariants: [{ VariantName: "v", ModelName: "m-1", InitialInstanceCount: 1, InstanceType: "ml.g9.huge" as never }] })));
    expect(badType.message).toMatch(/Value 'ml\.g9\.huge' at 'productionVariants\.1\.member\.instanceType' failed to satisfy constraint: Member must satisfy enum value set: \[/);
  });

  it("refuses duplicates and unknown references", async () => {
    const dup = await refusal(sm.send(new CreateModelCommand({ ModelName: "m-1", ExecutionRoleArn: ROLE, PrimaryContainer: { Image: "img:1" } })));
    expect(dup.message).toBe('Cannot create already existing model "arn:aws:sagemaker:us-east-1:000000000000:model/m-1".');
    const noModel = await refusal(sm.send(new CreateEndpointConfigCommand({ EndpointConfigName: "c-2", ProductionVariants: [{ VariantName: "v", ModelName: "ghost", InitialInstanceCount: 1, InstanceType: "ml.g4dn.xlarge" }] })));
    expect(noModel.message).toBe('Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/ghost".');
    const noConfig = await refusal(sm.send(new CreateEndpointCommand({ EndpointName: "e-1", EndpointConfigName: "ghost" })));
    expect(noConfig.message).toBe('Could not find endpoint configuration "ghost".');
    const noEndpoint = await refusal(sm.send(new DeleteEndpointCommand({ EndpointName: "ghost" })));
    expect(noEndpoint).toEqual({ name: "ValidationException", status: 400, message: 'Could not find endpoint "ghost".' });
  });

  it("walks an endpoint Creating → InService → Deleting → gone, with epoch-second timestamps", async () => {
    await sm.send(new CreateEndpointConfigCommand({ EndpointConfigName: "c-1", ProductionVariants: [{ VariantName: "prod", ModelName: "m-1", InitialInstanceCount: 2, InstanceType: "ml.g4dn.xlarge" }] }));
    await sm.send(new CreateEndpointCommand({ EndpointName: "e-1", EndpointConfigName: "c-1" }));
    const creating = await sm.send(new DescribeEndpointCommand({ EndpointName: "e-1" }));
    expect(creating.EndpointStatus).toBe("Creating");
    expect(creating.CreationTime).toBeInstanceOf(Date);
    expect(Math.abs(creating.CreationTime!.getTime() - Date.now())).toBeLessThan(5000);
    const dup = await refusal(sm.send(new CreateEndpointCommand({ EndpointName: "e-1", EndpointConfigName: "c-1" })));
    expect(dup.message).toBe('Cannot create already existing endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/e-1".');
    await new Promise((r) => setTimeout(r, 150));
    const ready = await sm.send(new DescribeEndpointCommand({ EndpointName: "e-1" }));
    expect(ready.EndpointStatus).toBe("InService");
    expect(ready.ProductionVariants?.[0]).toMatchObject({ VariantName: "prod", CurrentInstanceCount: 2, DesiredInstanceCount: 2 });
    expect((await sm.send(new ListEndpointsCommand({}))).Endpoints?.map((e) => e.EndpointName)).toEqual(["e-1"]);
    await sm.send(new DeleteEndpointCommand({ EndpointName: "e-1" }));
    expect((await sm.send(new DescribeEndpointCommand({ EndpointName: "e-1" }))).EndpointStatus).toBe("Deleting");
    await new Promise((r) => setTimeout(r, 100));
    expect((await refusal(sm.send(new DescribeEndpointCommand({ EndpointName: "e-1" })))).message).toBe('Could not find endpoint "e-1".');
  });

  it("fails endpoints of instance types configured to lack quota", async () => {
    await sm.send(new CreateEndpointConfigCommand({ EndpointConfigName: "c-big", ProductionVariants: [{ VariantName: "prod", ModelName: "m-1", InitialInstanceCount: 1, InstanceType: "ml.g5.48xlarge" }] }));
    await sm.send(new CreateEndpointCommand({ EndpointName: "e-big", EndpointConfigName: "c-big" }));
    await new Promise((r) => setTimeout(r, 150));
    const failed = await sm.send(new DescribeEndpointCommand({ EndpointName: "e-big" }));
    expect(failed.EndpointStatus).toBe("Failed");
    expect(failed.FailureReason).toMatch(/^The account-level service limit 'ml\.g5\.48xlarge for endpoint usage' is 0 Instances/);
  });

  it("checks autoscaling targets against existing endpoints", async () => {
    const aas = new ApplicationAutoScalingClient({ region: "us-east-1", endpoint: emulator.url, credentials, maxAttempts: 1 });
    const target = { ServiceNamespace: "sagemaker" as const, ResourceId: "endpoint/ghost/variant/prod", ScalableDimension: "sagemaker:variant:DesiredInstanceCount" as const };
    expect((await refusal(aas.send(new RegisterScalableTargetCommand({ ...target, MinCapacity: 0, MaxCapacity: 1 })))).name).toBe("ValidationException");
    const policy = await refusal(aas.send(new PutScalingPolicyCommand({ ...target, PolicyName: "p", PolicyType: "StepScaling", StepScalingPolicyConfiguration: {} })));
    expect(policy.name).toBe("ObjectNotFoundException");
    aas.destroy();
  });

  it("keeps its state across a restart", async () => {
    const settings = emulator.state.settings;
    await emulator.stop();
    emulator = await startSageMakerEmulator({ settings });
    const again = new SageMakerClient({ region: "us-east-1", endpoint: emulator.url, credentials, maxAttempts: 1 });
    expect((await again.send(new DescribeModelCommand({ ModelName: "m-1" }))).ModelArn).toBe("arn:aws:sagemaker:us-east-1:000000000000:model/m-1");
    expect((await again.send(new DescribeEndpointCommand({ EndpointName: "e-big" }))).EndpointStatus).toBe("Failed");
    again.destroy();
  });
});
