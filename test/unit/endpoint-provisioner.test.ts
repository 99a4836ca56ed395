import { afterEach, describe, expect, it } from "vitest";
import { mockClient } from "aws-sdk-client-mock";
import { ApplicationAutoScalingClient, DeregisterScalableTargetCommand, PutScalingPolicyCommand, RegisterScalableTargetCommand } from "@aws-sdk/client-application-auto-scaling";
import { CloudWatchClient, PutMetricAlarmCommand } from "@aws-sdk/client-cloudwatch";
import {
  CreateEndpointCommand,
  CreateEndpointConfigCommand,
  CreateModelCommand,
  DeleteEndpointCommand,
  DeleteEndpointConfigCommand,
  DeleteModelCommand,
  DescribeEndpointCommand,
  DescribeEndpointConfigCommand,
  DescribeModelCommand,
  SageMakerClient,
  SageMakerServiceException,
} from "@aws-sdk/client-sagemaker";
import { EndpointProvisioner, SageMakerRequestError, type EndpointSpec } from "../../src/adapters/sagemaker/endpoint-provisioner.js";

const sm = mockClient(SageMakerClient);
const aas = mockClient(ApplicationAutoScalingClient);
const cw = mockClient(CloudWatchClient);
const provisioner = new EndpointProvisioner(new SageMakerClient({ region: "eu-west-1" }), new ApplicationAutoScalingClient({ region: "eu-west-1" }), new CloudWatchClient({ region: "eu-west-1" }));

function awsError(name: string, message: string, status = 400) {
  return new SageMakerServiceException({ name, $fault: status < 500 ? "client" : "server", $metadata: { httpStatusCode: status }, message });
}

const spec: EndpointSpec = {
  endpointName: "esd-async-a",
  modelName: "esd-model-async-a",
  configName: "esd-config-async-a",
  endpointType: "Async",
  instanceType: "ml.g5.2xlarge",
  initialInstanceCount: 1,
  image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sd/inference:v1",
  modelDataUrl: "s3://bucket/data/model.tar.gz",
  executionRoleArn: "arn:aws:iam::123456789012:role/Exec",
  environment: { ENDPOINT_NAME: "esd-async-a" },
  async: { outputPath: "s3://bucket/out/", failurePath: "s3://bucket/out/failure/", successTopicArn: "arn:aws:sns:eu-west-1:123456789012:ok", errorTopicArn: "arn:aws:sns:eu-west-1:123456789012:err", maxConcurrentInvocationsPerInstance: 2 },
  tags: { "diffgate:endpoint-id": "id-1" },
};

afterEach(() => {
  sm.reset();
  aas.reset();
  cw.reset();
});

describe("EndpointProvisioner (requests asserted against mocked AWS clients)", () => {
  it("creates what is missing with exactly these requests", async () => {
    sm.on(DescribeModelCommand).rejects(awsError("ValidationException", 'Could not find model "arn:…".'));
    sm.on(DescribeEndpointConfigCommand).rejects(awsError("ValidationException", 'Could not find endpoint configuration "esd-config-async-a".'));
    sm.on(DescribeEndpointCommand).rejects(awsError("ValidationException", 'Could not find endpoint "esd-async-a".'));
    sm.on(CreateModelCommand).resolves({ ModelArn: "arn:model" });
    sm.on(CreateEndpointConfigCommand).resolves({ EndpointConfigArn: "arn:config" });
    sm.on(CreateEndpointCommand).resolves({ EndpointArn: "arn:endpoint" });
    expect(await provisioner.ensureModel(spec)).toBe("created");
    expect(await provisioner.ensureEndpointConfig(spec)).toBe("created");
    expect(await provisioner.ensureEndpoint(spec)).toBe("created");
    expect(sm.commandCalls(CreateModelCommand)[0]!.args[0].input).toEqual({
      ModelName: "esd-model-async-a",
      ExecutionRoleArn: "arn:aws:iam::123456789012:role/Exec",
      PrimaryContainer: { Image: spec.image, ModelDataUrl: "s3://bucket/data/model.tar.gz", Environment: { ENDPOINT_NAME: "esd-async-a" } },
      Tags: [{ Key: "diffgate:endpoint-id", Value: "id-1" }],
    });
    expect(sm.commandCalls(CreateEndpointConfigCommand)[0]!.args[0].input).toEqual({
      EndpointConfigName: "esd-config-async-a",
      ProductionVariants: [{ VariantName: "prod", ModelName: "esd-model-async-a", InitialInstanceCount: 1, InstanceType: "ml.g5.2xlarge" }],
      AsyncInferenceConfig: {
        OutputConfig: { S3OutputPath: "s3://bucket/out/", S3FailurePath: "s3://bucket/out/failure/", NotificationConfig: { SuccessTopic: "arn:aws:sns:eu-west-1:123456789012:ok", ErrorTopic: "arn:aws:sns:eu-west-1:123456789012:err" } },
        ClientConfig: { MaxConcurrentInvocationsPerInstance: 2 },
      },
      Tags: [{ Key: "diffgate:endpoint-id", Value: "id-1" }],
    });
    expect(sm.commandCalls(CreateEndpointCommand)[0]!.args[0].input).toEqual({ EndpointName: "esd-async-a", EndpointConfigName: "esd-config-async-a", Tags: [{ Key: "diffgate:endpoint-id", Value: "id-1" }] });
  });

  it("creates nothing that already exists, and treats a lost create race as done", async () => {
    sm.on(DescribeModelCommand).resolves({ ModelName: "esd-model-async-a" });
    sm.on(DescribeEndpointConfigCommand).rejects(awsError("ValidationException", "Could not find endpoint configuration"));
    sm.on(CreateEndpointConfigCommand).rejects(awsError("ValidationException", 'Cannot create already existing endpoint configuration "arn:…".'));
    expect(await provisioner.ensureModel(spec)).toBe("existed");
    expect(await provisioner.ensureEndpointConfig(spec)).toBe("existed");
    expect(sm.commandCalls(CreateModelCommand)).toHaveLength(0);
  });

  it("turns SageMaker's refusals into SageMakerRequestError and leaves server faults retryable", async () => {
    sm.on(DescribeModelCommand).rejects(awsError("ValidationException", "Could not find model"));
    sm.on(CreateModelCommand).rejects(awsError("ResourceLimitExceeded", "The account-level service limit"));
    await expect(provisioner.ensureModel(spec)).rejects.toBeInstanceOf(SageMakerRequestError);
    sm.reset();
    sm.on(DescribeModelCommand).rejects(awsError("InternalFailure", "boom", 500));
    const err = await provisioner.ensureModel(spec).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(SageMakerRequestError);
  });

  it("registers per-endpoint autoscaling and wakes from zero with its own alarm", async () => {
    aas.on(RegisterScalableTargetCommand).resolves({});
    aas.on(PutScalingPolicyCommand, { PolicyName: "esd-async-a-wake-from-zero" }).resolves({ PolicyARN: "arn:wake", Alarms: [] });
    aas.on(PutScalingPolicyCommand, { PolicyName: "esd-async-a-backlog-per-instance" }).resolves({ PolicyARN: "arn:track", Alarms: [] });
    cw.on(PutMetricAlarmCommand).resolves({});
    await provisioner.registerAutoscaling({ endpointName: "esd-async-a", minCapacity: 0, maxCapacity: 3 });
    expect(aas.commandCalls(RegisterScalableTargetCommand)[0]!.args[0].input).toEqual({ ServiceNamespace: "sagemaker", ResourceId: "endpoint/esd-async-a/variant/prod", ScalableDimension: "sagemaker:variant:DesiredInstanceCount", MinCapacity: 0, MaxCapacity: 3 });
    const step = aas.commandCalls(PutScalingPolicyCommand)[1]!.args[0].input;
    expect(step).toMatchObject({ PolicyName: "esd-async-a-wake-from-zero", PolicyType: "StepScaling", StepScalingPolicyConfiguration: { AdjustmentType: "ChangeInCapacity", StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }] } });
    expect(cw.commandCalls(PutMetricAlarmCommand)[0]!.args[0].input).toMatchObject({ AlarmName: "esd-async-a-has-backlog-without-capacity", MetricName: "HasBacklogWithoutCapacity", AlarmActions: ["arn:wake"], Dimensions: [{ Name: "EndpointName", Value: "esd-async-a" }] });
  });

  it("deletes everything and tolerates parts already gone", async () => {
    const gone = awsError("ValidationException", "Could not find endpoint");
    aas.rejects(Object.assign(new Error("No scalable target registered"), { name: "ObjectNotFoundException" }));
    cw.resolves({});
    sm.on(DescribeEndpointCommand).rejects(gone);
    sm.on(DeleteEndpointConfigCommand).rejects(awsError("ValidationException", "Could not find endpoint configuration"));
    sm.on(DeleteModelCommand).resolves({});
    await provisioner.deleteAll({ endpointName: "esd-async-a", configName: "esd-config-async-a", modelName: "esd-model-async-a" });
    expect(sm.commandCalls(DeleteEndpointCommand)).toHaveLength(0);
    expect(sm.commandCalls(DeleteModelCommand)[0]!.args[0].input).toEqual({ ModelName: "esd-model-async-a" });
    expect(aas.commandCalls(DeregisterScalableTargetCommand)).toHaveLength(1);
  });
});
