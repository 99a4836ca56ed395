import {
  DeleteScalingPolicyCommand,
  DeregisterScalableTargetCommand,
  PutScalingPolicyCommand,
  RegisterScalableTargetCommand,
  type ApplicationAutoScalingClient,
} from "@aws-sdk/client-application-auto-scaling";
import { DeleteAlarmsCommand, PutMetricAlarmCommand, type CloudWatchClient } from "@aws-sdk/client-cloudwatch";
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
  type SageMakerClient,
} from "@aws-sdk/client-sagemaker";
import { VARIANT_NAME, scalingNames } from "../../domain/endpoints.js";

/** What Diffgate asks SageMaker to build for one endpoint. */
export interface EndpointSpec {
  endpointName: string;
  modelName: string;
  configName: string;
  endpointType: "Async" | "Real-time";
  instanceType: string;
  initialInstanceCount: number;
  image: string;
  modelDataUrl: string;
  executionRoleArn: string;
  environment: Record<string, string>;
  async?: { outputPath: string; failurePath: string; successTopicArn?: string; errorTopicArn?: string; maxConcurrentInvocationsPerInstance: number };
  tags: Record<string, string>;
}

export interface EndpointState {
  status: string;
  failureReason?: string;
  currentInstanceCount: number;
  desiredInstanceCount: number;
}

export interface ScalingSpec {
  endpointName: string;
  minCapacity: number;
  maxCapacity: number;
}

/** A refusal from AWS that retrying will not change (bad input, quota, a conflicting resource). */
export class SageMakerRequestError extends Error {
  constructor(
    readonly operation: string,
    readonly awsCode: string,
    message: string,
  ) {
    super(`${operation}: ${message}`);
    this.name = "SageMakerRequestError";
  }
}

/** A create that lost a race with an earlier attempt of ours (e.g. by a worker that died mid-call). */
function isAlreadyExisting(e: unknown): boolean {
  const err = e as { name?: string; message?: string };
  return err.name === "ValidationException" && /^Cannot create already existing/.test(err.message ?? "");
}

/** Runs a create; "it already exists" counts as done, since every name is ours and deterministic. */
async function create(operation: string, send: () => Promise<unknown>): Promise<"created" | "existed"> {
  try {
    await send();
    return "created";
  } catch (e) {
    if (isAlreadyExisting(e)) return "existed";
    throw classify(operation, e);
  }
}

function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; message?: string };
  return (err.name === "ValidationException" && /^Could not find/.test(err.message ?? "")) || err.name === "ObjectNotFoundException" || err.name === "ResourceNotFound";
}

/** Client-side refusals (4xx) become SageMakerRequestError; throttling and server faults stay retryable. */
export function classify(operation: string, e: unknown): unknown {
  const err = e as { name?: string; message?: string; $fault?: string; $metadata?: { httpStatusCode?: number } };
  const status = err.$metadata?.httpStatusCode ?? 0;
  const throttled = /Throttl|TooManyRequests|LimitExceeded/.test(err.name ?? "") && err.name !== "ResourceLimitExceeded";
  if (err.$fault === "client" && status >= 400 && status < 500 && !throttled) return new SageMakerRequestError(operation, err.name ?? "ClientError", err.message ?? "refused");
  return e;
}

async function call<T>(operation: string, send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (e) {
    throw classify(operation, e);
  }
}

/** Runs `send`, treating "it does not exist" as done: every delete is safe to repeat. */
async function ignoringMissing(operation: string, send: () => Promise<unknown>): Promise<void> {
  try {
    await send();
  } catch (e) {
    if (isNotFound(e)) return;
    throw classify(operation, e);
  }
}

/**
 * Idempotent SageMaker operations for endpoints: every `ensure` looks before it creates, so a
 * retried or resumed workflow never makes a second model, config or endpoint.
 */
export class EndpointProvisioner {
  constructor(
    private readonly sagemaker: SageMakerClient,
    private readonly autoscaling: ApplicationAutoScalingClient,
    private readonly cloudwatch: CloudWatchClient,
  ) {}

  async ensureModel(spec: EndpointSpec): Promise<"created" | "existed"> {
    try {
      await this.sagemaker.send(new DescribeModelCommand({ ModelName: spec.modelName }));
      return "existed";
    } catch (e) {
      if (!isNotFound(e)) throw classify("DescribeModel", e);
    }
    return create("CreateModel", () =>
      this.sagemaker.send(
        new CreateModelCommand({
          ModelName: spec.modelName,
          ExecutionRoleArn: spec.executionRoleArn,
          PrimaryContainer: { Image: spec.image, ModelDataUrl: spec.modelDataUrl, Environment: spec.environment },
          Tags: Object.entries(spec.tags).map(([Key, Value]) => ({ Key, Value })),
        }),
      ),
    );
  }

  async ensureEndpointConfig(spec: EndpointSpec): Promise<"created" | "existed"> {
    try {
      await this.sagemaker.send(new DescribeEndpointConfigCommand({ EndpointConfigName: spec.configName }));
      return "existed";
    } catch (e) {
      if (!isNotFound(e)) throw classify("DescribeEndpointConfig", e);
    }
    return create("CreateEndpointConfig", () =>
      this.sagemaker.send(
        new CreateEndpointConfigCommand({
          EndpointConfigName: spec.configName,
          ProductionVariants: [{ VariantName: VARIANT_NAME, ModelName: spec.modelName, InitialInstanceCount: spec.initialInstanceCount, InstanceType: spec.instanceType as never }],
          ...(spec.async
            ? {
                AsyncInferenceConfig: {
                  OutputConfig: {
                    S3OutputPath: spec.async.outputPath,
                    S3FailurePath: spec.async.failurePath,
                    ...(spec.async.successTopicArn && spec.async.errorTopicArn
                      ? { NotificationConfig: { SuccessTopic: spec.async.successTopicArn, ErrorTopic: spec.async.errorTopicArn } }
                      : {}),
                  },
                  ClientConfig: { MaxConcurrentInvocationsPerInstance: spec.async.maxConcurrentInvocationsPerInstance },
                },
              }
            : {}),
          Tags: Object.entries(spec.tags).map(([Key, Value]) => ({ Key, Value })),
        }),
      ),
    );
  }

  async ensureEndpoint(spec: EndpointSpec): Promise<"created" | "existed"> {
    if (await this.describeEndpoint(spec.endpointName)) return "existed";
    return create("CreateEndpoint", () =>
      this.sagemaker.send(
        new CreateEndpointCommand({ EndpointName: spec.endpointName, EndpointConfigName: spec.configName, Tags: Object.entries(spec.tags).map(([Key, Value]) => ({ Key, Value })) }),
      ),
    );
  }

  /** The endpoint's state, or undefined when SageMaker does not know it. */
  async describeEndpoint(endpointName: string): Promise<EndpointState | undefined> {
    try {
      const d = await this.sagemaker.send(new DescribeEndpointCommand({ EndpointName: endpointName }));
      const variant = d.ProductionVariants?.[0];
      return {
        status: d.EndpointStatus ?? "Unknown",
        ...(d.FailureReason ? { failureReason: d.FailureReason } : {}),
        currentInstanceCount: variant?.CurrentInstanceCount ?? 0,
        desiredInstanceCount: variant?.DesiredInstanceCount ?? 0,
      };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw classify("DescribeEndpoint", e);
    }
  }

  /**
   * Scale-to-zero autoscaling with per-endpoint names: target tracking on the backlog per
   * instance, and a step policy woken by an alarm when there is a backlog but no instance.
   */
  async registerAutoscaling(spec: ScalingSpec): Promise<void> {
    const names = scalingNames(spec.endpointName);
    const target = { ServiceNamespace: "sagemaker" as const, ResourceId: names.resourceId, ScalableDimension: "sagemaker:variant:DesiredInstanceCount" as const };
    await call("RegisterScalableTarget", () => this.autoscaling.send(new RegisterScalableTargetCommand({ ...target, MinCapacity: spec.minCapacity, MaxCapacity: spec.maxCapacity })));
    await call("PutScalingPolicy", () =>
      this.autoscaling.send(
        new PutScalingPolicyCommand({
          ...target,
          PolicyName: names.targetTrackingPolicy,
          PolicyType: "TargetTrackingScaling",
          TargetTrackingScalingPolicyConfiguration: {
            TargetValue: 5.0,
            CustomizedMetricSpecification: {
              MetricName: "ApproximateBacklogSizePerInstance",
              Namespace: "AWS/SageMaker",
              Dimensions: [{ Name: "EndpointName", Value: spec.endpointName }],
              Statistic: "Average",
            },
            ScaleInCooldown: 180,
            ScaleOutCooldown: 60,
          },
        }),
      ),
    );
    if (spec.minCapacity > 0) return;
    const wake = await call("PutScalingPolicy", () =>
      this.autoscaling.send(
        new PutScalingPolicyCommand({
          ...target,
          PolicyName: names.wakePolicy,
          PolicyType: "StepScaling",
          StepScalingPolicyConfiguration: {
            AdjustmentType: "ChangeInCapacity",
            MetricAggregationType: "Average",
            Cooldown: 180,
            StepAdjustments: [{ MetricIntervalLowerBound: 0, ScalingAdjustment: 1 }],
          },
        }),
      ),
    );
    await call("PutMetricAlarm", () =>
      this.cloudwatch.send(
        new PutMetricAlarmCommand({
          AlarmName: names.wakeAlarm,
          MetricName: "HasBacklogWithoutCapacity",
          Namespace: "AWS/SageMaker",
          Statistic: "Average",
          Period: 60,
          EvaluationPeriods: 2,
          DatapointsToAlarm: 2,
          Threshold: 1,
          ComparisonOperator: "GreaterThanOrEqualToThreshold",
          TreatMissingData: "missing",
          Dimensions: [{ Name: "EndpointName", Value: spec.endpointName }],
          AlarmActions: wake.PolicyARN ? [wake.PolicyARN] : [],
        }),
      ),
    );
  }

  /** Removes the endpoint, its scaling, config and model; parts already gone are fine. */
  async deleteAll(spec: { endpointName: string; configName: string; modelName: string }): Promise<void> {
    const names = scalingNames(spec.endpointName);
    const target = { ServiceNamespace: "sagemaker" as const, ResourceId: names.resourceId, ScalableDimension: "sagemaker:variant:DesiredInstanceCount" as const };
    await ignoringMissing("DeleteAlarms", () => this.cloudwatch.send(new DeleteAlarmsCommand({ AlarmNames: [names.wakeAlarm] })));
    for (const policy of [names.wakePolicy, names.targetTrackingPolicy]) {
      await ignoringMissing("DeleteScalingPolicy", () => this.autoscaling.send(new DeleteScalingPolicyCommand({ ...target, PolicyName: policy })));
    }
    await ignoringMissing("DeregisterScalableTarget", () => this.autoscaling.send(new DeregisterScalableTargetCommand(target)));
    const current = await this.describeEndpoint(spec.endpointName);
    if (current && current.status !== "Deleting") await ignoringMissing("DeleteEndpoint", () => this.sagemaker.send(new DeleteEndpointCommand({ EndpointName: spec.endpointName })));
    await ignoringMissing("DeleteEndpointConfig", () => this.sagemaker.send(new DeleteEndpointConfigCommand({ EndpointConfigName: spec.configName })));
    await ignoringMissing("DeleteModel", () => this.sagemaker.send(new DeleteModelCommand({ ModelName: spec.modelName })));
  }
}
