import { randomUUID } from "node:crypto";
import type { EmulatorState, EndpointRecord, VariantRecord } from "./emulator-state.js";

type Body = Record<string, unknown>;

/** An error as the AWS JSON protocols send it: HTTP status, `__type`, message. */
export class AwsError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string,
  ) {
    super(message);
  }
}

const NAME_PATTERN = /^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/;
const NAME_PATTERN_TEXT = "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}";
export const ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/?[a-zA-Z_0-9+=,.@\-_/]+$/;
export const S3_URI = /^(https|s3):\/\/([^/]+)\/?(.*)$/;

/** SageMaker's production-variant instance types (the families a Stable Diffusion deployment may use, and common CPU ones). */
export const VARIANT_INSTANCE_TYPES = [
  "ml.t2.medium", "ml.t2.large", "ml.t2.xlarge", "ml.t2.2xlarge",
  "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge", "ml.m5.24xlarge",
  "ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge", "ml.c5.9xlarge", "ml.c5.18xlarge",
  "ml.c6i.large", "ml.c6i.xlarge", "ml.c6i.2xlarge", "ml.c6i.4xlarge", "ml.c6i.8xlarge",
  "ml.r5.large", "ml.r5.xlarge", "ml.r5.2xlarge", "ml.r5.4xlarge",
  "ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g4dn.4xlarge", "ml.g4dn.8xlarge", "ml.g4dn.12xlarge", "ml.g4dn.16xlarge",
  "ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.4xlarge", "ml.g5.8xlarge", "ml.g5.12xlarge", "ml.g5.16xlarge", "ml.g5.24xlarge", "ml.g5.48xlarge",
  "ml.p3.2xlarge", "ml.p3.8xlarge", "ml.p3.16xlarge",
  "ml.inf2.xlarge", "ml.inf2.8xlarge",
];

/** Collects constraint violations and reports them the way SageMaker does. */
export class Violations {
  private readonly found: string[] = [];

  required(value: unknown, path: string): boolean {
    if (value === undefined || value === null) {
      this.found.push(`Value null at '${path}' failed to satisfy constraint: Member must not be null`);
      return false;
    }
    return true;
  }

  name(value: unknown, path: string): value is string {
    if (!this.required(value, path)) return false;
    if (typeof value !== "string") return this.add(`Value '${String(value)}' at '${path}' failed to satisfy constraint: Member must be a string`);
    if (value.length > 63) return this.add(`Value '${value}' at '${path}' failed to satisfy constraint: Member must have length less than or equal to 63`);
    if (!NAME_PATTERN.test(value)) return this.add(`Value '${value}' at '${path}' failed to satisfy constraint: Member must satisfy regular expression pattern: ${NAME_PATTERN_TEXT}`);
    return true;
  }

  add(message: string): false {
    this.found.push(message);
    return false;
  }

  throwIfAny(): void {
    if (this.found.length === 0) return;
    const n = this.found.length;
    throw new AwsError(400, "ValidationException", `${n} validation error${n > 1 ? "s" : ""} detected: ${this.found.join("; ")}`);
  }
}

export const validation = (message: string) => new AwsError(400, "ValidationException", message);
export const seconds = (ms: number) => ms / 1000;

function describeEndpoint(state: EmulatorState, e: EndpointRecord) {
  const config = state.endpointConfigs[e.configName];
  return {
    EndpointName: e.name,
    EndpointArn: e.arn,
    EndpointConfigName: e.configName,
    ProductionVariants: Object.keys(e.desired).map((variantName) => ({
      VariantName: variantName,
      CurrentInstanceCount: e.current[variantName] ?? 0,
      DesiredInstanceCount: e.desired[variantName] ?? 0,
      CurrentWeight: 1,
      DesiredWeight: 1,
    })),
    EndpointStatus: e.status,
    ...(e.failureReason ? { FailureReason: e.failureReason } : {}),
    CreationTime: seconds(e.createdAt),
    LastModifiedTime: seconds(e.lastModifiedAt),
    ...(config?.asyncInferenceConfig ? { AsyncInferenceConfig: config.asyncInferenceConfig } : {}),
  };
}

export type Operation = (state: EmulatorState, body: Body) => unknown;

export const SAGEMAKER_OPERATIONS: Record<string, Operation> = {
  CreateModel(state, b) {
    const v = new Violations();
    v.name(b.ModelName, "modelName");
    if (v.required(b.ExecutionRoleArn, "executionRoleArn") && (typeof b.ExecutionRoleArn !== "string" || !ROLE_ARN.test(b.ExecutionRoleArn))) {
      v.add(`Value '${String(b.ExecutionRoleArn)}' at 'executionRoleArn' failed to satisfy constraint: Member must satisfy regular expression pattern: ^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$`);
    }
    const container = b.PrimaryContainer as Body | undefined;
    if (!container) v.add("Value null at 'primaryContainer' failed to satisfy constraint: Member must not be null");
    else v.required(container.Image, "primaryContainer.image");
    v.throwIfAny();
    const name = b.ModelName as string;
    if (state.models[name]) throw validation(`Cannot create already existing model "${state.arn("model", name)}".`);
    state.models[name] = {
      name,
      arn: state.arn("model", name),
      image: String(container!.Image),
      ...(typeof container!.ModelDataUrl === "string" ? { modelDataUrl: container!.ModelDataUrl } : {}),
      environment: (container!.Environment as Record<string, string> | undefined) ?? {},
      executionRoleArn: b.ExecutionRoleArn as string,
      createdAt: state.nowMs(),
    };
    state.save();
    return { ModelArn: state.models[name].arn };
  },

  DescribeModel(state, b) {
    const v = new Violations();
    v.name(b.ModelName, "modelName");
    v.throwIfAny();
    const m = state.models[b.ModelName as string];
    if (!m) throw validation(`Could not find model "${state.arn("model", b.ModelName as string)}".`);
    return {
      ModelName: m.name,
      ModelArn: m.arn,
      PrimaryContainer: { Image: m.image, ...(m.modelDataUrl ? { ModelDataUrl: m.modelDataUrl } : {}), Environment: m.environment },
      ExecutionRoleArn: m.executionRoleArn,
      CreationTime: seconds(m.createdAt),
    };
  },

  DeleteModel(state, b) {
    const v = new Violations();
    v.name(b.ModelName, "modelName");
    v.throwIfAny();
    const name = b.ModelName as string;
    if (!state.models[name]) throw validation(`Could not find model "${state.arn("model", name)}".`);
    delete state.models[name];
    state.save();
    return {};
  },

  CreateEndpointConfig(state, b) {
    const v = new Violations();
    v.name(b.EndpointConfigName, "endpointConfigName");
    const variants = b.ProductionVariants as Body[] | undefined;
    if (v.required(variants, "productionVariants")) {
      if (!Array.isArray(variants) || variants.length < 1 || variants.length > 10) v.add("Value at 'productionVariants' failed to satisfy constraint: Member must have length between 1 and 10");
      else
        variants.forEach((pv, i) => {
          const at = `productionVariants.${i + 1}.member`;
          v.required(pv.VariantName, `${at}.variantName`);
          v.name(pv.ModelName, `${at}.modelName`);
          if (v.required(pv.InstanceType, `${at}.instanceType`) && !VARIANT_INSTANCE_TYPES.includes(String(pv.InstanceType))) {
            v.add(`Value '${String(pv.InstanceType)}' at '${at}.instanceType' failed to satisfy constraint: Member must satisfy enum value set: [${VARIANT_INSTANCE_TYPES.join(", ")}]`);
          }
          if (v.required(pv.InitialInstanceCount, `${at}.initialInstanceCount`) && !(Number.isInteger(pv.InitialInstanceCount) && (pv.InitialInstanceCount as number) >= 1)) {
            v.add(`Value '${String(pv.InitialInstanceCount)}' at '${at}.initialInstanceCount' failed to satisfy constraint: Member must have value greater than or equal to 1`);
          }
        });
    }
    const asyncConfig = b.AsyncInferenceConfig as Body | undefined;
    if (asyncConfig) {
      const output = asyncConfig.OutputConfig as Body | undefined;
      if (!output) v.add("Value null at 'asyncInferenceConfig.outputConfig' failed to satisfy constraint: Member must not be null");
      else if (output.S3OutputPath !== undefined && !S3_URI.test(String(output.S3OutputPath))) {
        v.add(`Value '${String(output.S3OutputPath)}' at 'asyncInferenceConfig.outputConfig.s3OutputPath' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$`);
      }
    }
    v.throwIfAny();
    const name = b.EndpointConfigName as string;
    if (state.endpointConfigs[name]) throw validation(`Cannot create already existing endpoint configuration "${state.arn("endpoint-config", name)}".`);
    for (const pv of variants!) {
      if (!state.models[pv.ModelName as string]) throw validation(`Could not find model "${state.arn("model", pv.ModelName as string)}".`);
    }
    state.endpointConfigs[name] = {
      name,
      arn: state.arn("endpoint-config", name),
      variants: variants!.map((pv): VariantRecord => ({ variantName: String(pv.VariantName), modelName: String(pv.ModelName), initialInstanceCount: pv.InitialInstanceCount as number, instanceType: String(pv.InstanceType) })),
      ...(asyncConfig ? { asyncInferenceConfig: asyncConfig } : {}),
      createdAt: state.nowMs(),
    };
    state.save();
    return { EndpointConfigArn: state.endpointConfigs[name].arn };
  },

  DescribeEndpointConfig(state, b) {
    const v = new Violations();
    v.name(b.EndpointConfigName, "endpointConfigName");
    v.throwIfAny();
    const c = state.endpointConfigs[b.EndpointConfigName as string];
    if (!c) throw validation(`Could not find endpoint configuration "${String(b.EndpointConfigName)}".`);
    return {
      EndpointConfigName: c.name,
      EndpointConfigArn: c.arn,
      ProductionVariants: c.variants.map((pv) => ({ VariantName: pv.variantName, ModelName: pv.modelName, InitialInstanceCount: pv.initialInstanceCount, InstanceType: pv.instanceType })),
      ...(c.asyncInferenceConfig ? { AsyncInferenceConfig: c.asyncInferenceConfig } : {}),
      CreationTime: seconds(c.createdAt),
    };
  },

  DeleteEndpointConfig(state, b) {
    const v = new Violations();
    v.name(b.EndpointConfigName, "endpointConfigName");
    v.throwIfAny();
    const name = b.EndpointConfigName as string;
    if (!state.endpointConfigs[name]) throw validation(`Could not find endpoint configuration "${name}".`);
    delete state.endpointConfigs[name];
    state.save();
    return {};
  },

  CreateEndpoint(state, b) {
    const v = new Violations();
    v.name(b.EndpointName, "endpointName");
    v.name(b.EndpointConfigName, "endpointConfigName");
    v.throwIfAny();
    const name = b.EndpointName as string;
    if (state.endpoint(name)) throw validation(`Cannot create already existing endpoint "${state.arn("endpoint", name)}".`);
    const config = state.endpointConfigs[b.EndpointConfigName as string];
    if (!config) throw validation(`Could not find endpoint configuration "${String(b.EndpointConfigName)}".`);
    const now = state.nowMs();
    const record: EndpointRecord = {
      name,
      arn: state.arn("endpoint", name),
      configName: config.name,
      status: "Creating",
      transitionAt: now + state.settings.endpointCreateMs,
      desired: Object.fromEntries(config.variants.map((pv) => [pv.variantName, pv.initialInstanceCount])),
      current: Object.fromEntries(config.variants.map((pv) => [pv.variantName, 0])),
      createdAt: now,
      lastModifiedAt: now,
    };
    state.putEndpoint(record);
    return { EndpointArn: record.arn };
  },

  DescribeEndpoint(state, b) {
    const v = new Violations();
    v.name(b.EndpointName, "endpointName");
    v.throwIfAny();
    const e = state.endpoint(b.EndpointName as string);
    if (!e) throw validation(`Could not find endpoint "${String(b.EndpointName)}".`);
    return describeEndpoint(state, e);
  },

  DeleteEndpoint(state, b) {
    const v = new Violations();
    v.name(b.EndpointName, "endpointName");
    v.throwIfAny();
    const e = state.endpoint(b.EndpointName as string);
    if (!e) throw validation(`Could not find endpoint "${String(b.EndpointName)}".`);
    if (e.status !== "Deleting") {
      const now = state.nowMs();
      e.status = "Deleting";
      e.transitionAt = now + state.settings.endpointDeleteMs;
      e.lastModifiedAt = now;
      state.putEndpoint(e);
    }
    return {};
  },

  ListEndpoints(state, b) {
    const max = b.MaxResults === undefined ? 10 : b.MaxResults;
    if (typeof max !== "number" || !Number.isInteger(max) || max < 1 || max > 100) {
      throw validation(`1 validation error detected: Value '${String(max)}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100`);
    }
    const start = typeof b.NextToken === "string" ? Number(b.NextToken) || 0 : 0;
    const matching = state
      .endpoints()
      .filter((e) => (typeof b.NameContains === "string" ? e.name.includes(b.NameContains) : true))
      .filter((e) => (typeof b.StatusEquals === "string" ? e.status === b.StatusEquals : true))
      .sort((a, c) => c.createdAt - a.createdAt);
    const page = matching.slice(start, start + max);
    return {
      Endpoints: page.map((e) => ({ EndpointName: e.name, EndpointArn: e.arn, CreationTime: seconds(e.createdAt), LastModifiedTime: seconds(e.lastModifiedAt), EndpointStatus: e.status })),
      ...(start + max < matching.length ? { NextToken: String(start + max) } : {}),
    };
  },

  UpdateEndpointWeightsAndCapacities(state, b) {
    const v = new Violations();
    v.name(b.EndpointName, "endpointName");
    v.required(b.DesiredWeightsAndCapacities, "desiredWeightsAndCapacities");
    v.throwIfAny();
    const e = state.endpoint(b.EndpointName as string);
    if (!e) throw validation(`Could not find endpoint "${String(b.EndpointName)}".`);
    if (e.status !== "InService") throw validation(`Cannot update in-progress endpoint "${e.arn}".`);
    for (const d of b.DesiredWeightsAndCapacities as Body[]) {
      const variant = String(d.VariantName);
      if (!(variant in e.desired)) throw validation(`The variant name(s) "${variant}" is/are not present in the endpoint.`);
      if (typeof d.DesiredInstanceCount === "number") e.desired[variant] = d.DesiredInstanceCount;
    }
    const now = state.nowMs();
    e.status = "Updating";
    e.transitionAt = now + state.settings.endpointUpdateMs;
    e.lastModifiedAt = now;
    state.putEndpoint(e);
    return { EndpointArn: e.arn };
  },
};

const SCALING_DIMENSION = "sagemaker:variant:DesiredInstanceCount";
const RESOURCE_ID = /^endpoint\/([^/]+)\/variant\/([^/]+)$/;
const targetKey = (b: Body) => `${String(b.ServiceNamespace)}|${String(b.ResourceId)}|${String(b.ScalableDimension)}`;
const notRegistered = (b: Body) =>
  new AwsError(400, "ObjectNotFoundException", `No scalable target registered for service namespace: ${String(b.ServiceNamespace)}, resource ID: ${String(b.ResourceId)}, scalable dimension: ${String(b.ScalableDimension)}`);

function checkTargetIdentity(b: Body): void {
  const v = new Violations();
  if (v.required(b.ServiceNamespace, "serviceNamespace") && b.ServiceNamespace !== "sagemaker") {
    v.add(`Value '${String(b.ServiceNamespace)}' at 'serviceNamespace' failed to satisfy constraint: Member must satisfy enum value set: [sagemaker]`);
  }
  v.required(b.ResourceId, "resourceId");
  if (v.required(b.ScalableDimension, "scalableDimension") && b.ScalableDimension !== SCALING_DIMENSION) {
    v.add(`Value '${String(b.ScalableDimension)}' at 'scalableDimension' failed to satisfy constraint: Member must satisfy enum value set: [${SCALING_DIMENSION}]`);
  }
  v.throwIfAny();
}

export const AUTOSCALING_OPERATIONS: Record<string, Operation> = {
  RegisterScalableTarget(state, b) {
    checkTargetIdentity(b);
    const match = RESOURCE_ID.exec(String(b.ResourceId));
    if (!match) throw validation(`Unsupported resource ID ${String(b.ResourceId)}; expected endpoint/<endpoint-name>/variant/<variant-name>`);
    const endpoint = state.endpoint(match[1]!);
    if (!endpoint || !(match[2]! in endpoint.desired)) throw validation(`The endpoint or variant for resource ID ${String(b.ResourceId)} does not exist.`);
    const existing = state.scalableTargets[targetKey(b)];
    const min = b.MinCapacity ?? existing?.minCapacity;
    const max = b.MaxCapacity ?? existing?.maxCapacity;
    if (typeof min !== "number" || typeof max !== "number") throw validation("MinCapacity and MaxCapacity are required when registering a new scalable target");
    if (min < 0 || max < 0) throw validation("Capacity must be greater than or equal to 0");
    if (min > max) throw validation(`Minimum capacity cannot be greater than maximum capacity`);
    state.scalableTargets[targetKey(b)] = {
      serviceNamespace: "sagemaker",
      resourceId: String(b.ResourceId),
      scalableDimension: SCALING_DIMENSION,
      minCapacity: min,
      maxCapacity: max,
      createdAt: existing?.createdAt ?? state.nowMs(),
    };
    state.save();
    return { ScalableTargetARN: `arn:aws:application-autoscaling:${state.settings.region}:${state.settings.accountId}:scalable-target/${String(b.ResourceId).replace(/\//g, "-")}` };
  },

  DeregisterScalableTarget(state, b) {
    checkTargetIdentity(b);
    if (!state.scalableTargets[targetKey(b)]) throw notRegistered(b);
    delete state.scalableTargets[targetKey(b)];
    for (const [key, p] of Object.entries(state.scalingPolicies)) if (p.resourceId === b.ResourceId) delete state.scalingPolicies[key];
    state.save();
    return {};
  },

  DescribeScalableTargets(state, b) {
    const ids = Array.isArray(b.ResourceIds) ? (b.ResourceIds as string[]) : undefined;
    return {
      ScalableTargets: Object.values(state.scalableTargets)
        .filter((t) => !ids || ids.includes(t.resourceId))
        .map((t) => ({ ServiceNamespace: t.serviceNamespace, ResourceId: t.resourceId, ScalableDimension: t.scalableDimension, MinCapacity: t.minCapacity, MaxCapacity: t.maxCapacity, CreationTime: seconds(t.createdAt), RoleARN: `arn:aws:iam::${state.settings.accountId}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint` })),
    };
  },

  PutScalingPolicy(state, b) {
    checkTargetIdentity(b);
    const v = new Violations();
    v.required(b.PolicyName, "policyName");
    if (v.required(b.PolicyType, "policyType") && !["TargetTrackingScaling", "StepScaling"].includes(String(b.PolicyType))) {
      v.add(`Value '${String(b.PolicyType)}' at 'policyType' failed to satisfy constraint: Member must satisfy enum value set: [StepScaling, TargetTrackingScaling, PredictiveScaling]`);
    }
    v.throwIfAny();
    if (!state.scalableTargets[targetKey(b)]) throw notRegistered(b);
    const configuration = b.PolicyType === "StepScaling" ? b.StepScalingPolicyConfiguration : b.TargetTrackingScalingPolicyConfiguration;
    if (!configuration) throw validation(`${b.PolicyType === "StepScaling" ? "StepScalingPolicyConfiguration" : "TargetTrackingScalingPolicyConfiguration"} must be specified for policy type ${String(b.PolicyType)}`);
    const key = `${targetKey(b)}|${String(b.PolicyName)}`;
    const existing = state.scalingPolicies[key];
    const policyArn = existing?.policyArn ?? `arn:aws:autoscaling:${state.settings.region}:${state.settings.accountId}:scalingPolicy:${randomUUID()}:resource/sagemaker/${String(b.ResourceId)}:policyName/${String(b.PolicyName)}`;
    state.scalingPolicies[key] = {
      policyName: String(b.PolicyName),
      policyArn,
      serviceNamespace: "sagemaker",
      resourceId: String(b.ResourceId),
      scalableDimension: SCALING_DIMENSION,
      policyType: String(b.PolicyType),
      configuration,
      createdAt: existing?.createdAt ?? state.nowMs(),
    };
    state.save();
    return { PolicyARN: policyArn, Alarms: [] };
  },

  DeleteScalingPolicy(state, b) {
    checkTargetIdentity(b);
    const key = `${targetKey(b)}|${String(b.PolicyName)}`;
    if (!state.scalingPolicies[key]) throw new AwsError(400, "ObjectNotFoundException", `No scaling policy found for service namespace: sagemaker, resource ID: ${String(b.ResourceId)}, scalable dimension: ${SCALING_DIMENSION}, policy name: ${String(b.PolicyName)}`);
    delete state.scalingPolicies[key];
    state.save();
    return {};
  },

  DescribeScalingPolicies(state, b) {
    return {
      ScalingPolicies: Object.values(state.scalingPolicies)
        .filter((p) => (typeof b.ResourceId === "string" ? p.resourceId === b.ResourceId : true))
        .map((p) => ({
          PolicyARN: p.policyArn,
          PolicyName: p.policyName,
          ServiceNamespace: p.serviceNamespace,
          ResourceId: p.resourceId,
          ScalableDimension: p.scalableDimension,
          PolicyType: p.policyType,
          ...(p.policyType === "StepScaling" ? { StepScalingPolicyConfiguration: p.configuration } : { TargetTrackingScalingPolicyConfiguration: p.configuration }),
          CreationTime: seconds(p.createdAt),
        })),
    };
  },
};

export const CLOUDWATCH_OPERATIONS: Record<string, Operation> = {
  PutMetricAlarm(state, b) {
    const v = new Violations();
    v.required(b.AlarmName, "AlarmName");
    v.required(b.EvaluationPeriods, "EvaluationPeriods");
    v.required(b.ComparisonOperator, "ComparisonOperator");
    v.throwIfAny();
    const name = String(b.AlarmName);
    state.alarms[name] = { alarmName: name, alarmArn: `arn:aws:cloudwatch:${state.settings.region}:${state.settings.accountId}:alarm:${name}`, definition: b, updatedAt: state.nowMs() };
    state.save();
    return {};
  },

  DeleteAlarms(state, b) {
    for (const name of (b.AlarmNames as string[] | undefined) ?? []) delete state.alarms[name];
    state.save();
    return {};
  },

  DescribeAlarms(state, b) {
    const names = Array.isArray(b.AlarmNames) ? (b.AlarmNames as string[]) : undefined;
    return {
      MetricAlarms: Object.values(state.alarms)
        .filter((a) => !names || names.includes(a.alarmName))
        .map((a) => ({ ...a.definition, AlarmArn: a.alarmArn, StateValue: "INSUFFICIENT_DATA", AlarmConfigurationUpdatedTimestamp: seconds(a.updatedAt) })),
    };
  },
};
