import { S3Client } from "@aws-sdk/client-s3";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

/** How the emulator behaves: delays of SageMaker's state walks, and failures to inject. */
export interface EmulatorSettings {
  region: string;
  accountId: string;
  /** Creating → InService (or Failed). */
  endpointCreateMs: number;
  /** Updating → InService. */
  endpointUpdateMs: number;
  /** Deleting → gone. */
  endpointDeleteMs: number;
  /** Instance types whose endpoints fail as an account without quota for them does. */
  failInstanceTypes: string[];
  /** Extra latency per operation name (e.g. {"CreateEndpointConfig": 1500}), applied before it acts. */
  operationDelaysMs?: Record<string, number>;
  /** Where the state is kept across restarts; in memory only when absent. Queued and running invocations are not kept. */
  stateFile?: string;
  /**
   * The S3 that async invocations read their input from and write their output to (the caller's
   * store, e.g. the embedded s3rver). Without it the SDK's defaults apply (environment, real AWS).
   */
  s3?: EmulatorS3Settings;
  /** Time an invocation spends per sampling step. */
  invocationStepMs: number;
  /** Time an invocation spends before its first step (loading, VAE, upload). */
  invocationStartMs: number;
  /** Timeout of one progress callback POST; callbacks never hold a job up. */
  progressCallbackTimeoutMs: number;
  /** Training jobs: time in SecondaryStatus Starting (LaunchingMLInstances, PreparingTrainingStack). */
  trainingStartingMs: number;
  /** Training jobs: time in Downloading (input data). */
  trainingDownloadingMs: number;
  /** Training jobs: time in Training. */
  trainingTrainingMs: number;
  /** Training jobs: time in Uploading (the model artifact is written when it ends). */
  trainingUploadingMs: number;
  /** Training jobs: time in Stopping, after StopTrainingJob or MaxRuntimeInSeconds. */
  trainingStoppingMs: number;
  /** Training jobs whose name contains one of these substrings fail with an AlgorithmError midway through Training (as does the hyperparameter `emulator_fail: "true"`). */
  failTrainingJobsMatching: string[];
}

export interface EmulatorS3Settings {
  endpoint?: string;
  region?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  forcePathStyle?: boolean;
}

export const DEFAULT_EMULATOR_SETTINGS: EmulatorSettings = {
  region: "us-east-1",
  accountId: "000000000000",
  endpointCreateMs: 5000,
  endpointUpdateMs: 3000,
  endpointDeleteMs: 2000,
  failInstanceTypes: [],
  invocationStepMs: 50,
  invocationStartMs: 200,
  progressCallbackTimeoutMs: 2000,
  trainingStartingMs: 6000,
  trainingDownloadingMs: 3000,
  trainingTrainingMs: 30000,
  trainingUploadingMs: 3000,
  trainingStoppingMs: 2000,
  failTrainingJobsMatching: [],
};

export interface ModelRecord {
  name: string;
  arn: string;
  image: string;
  modelDataUrl?: string;
  environment: Record<string, string>;
  executionRoleArn: string;
  createdAt: number;
}

export interface VariantRecord {
  variantName: string;
  modelName: string;
  initialInstanceCount: number;
  instanceType: string;
}

export interface EndpointConfigRecord {
  name: string;
  arn: string;
  variants: VariantRecord[];
  asyncInferenceConfig?: unknown;
  createdAt: number;
}

export type EndpointPhase = "Creating" | "InService" | "Updating" | "Failed" | "Deleting";

export interface EndpointRecord {
  name: string;
  arn: string;
  configName: string;
  status: EndpointPhase;
  /** When the current transition (Creating/Updating/Deleting) completes, epoch ms. */
  transitionAt: number;
  failureReason?: string;
  /** Desired and current instance count per variant. */
  desired: Record<string, number>;
  current: Record<string, number>;
  createdAt: number;
  lastModifiedAt: number;
}

export interface ScalableTargetRecord {
  serviceNamespace: string;
  resourceId: string;
  scalableDimension: string;
  minCapacity: number;
  maxCapacity: number;
  createdAt: number;
}

export interface ScalingPolicyRecord {
  policyName: string;
  policyArn: string;
  serviceNamespace: string;
  resourceId: string;
  scalableDimension: string;
  policyType: string;
  configuration: unknown;
  createdAt: number;
}

export interface AlarmRecord {
  alarmName: string;
  alarmArn: string;
  definition: Record<string, unknown>;
  updatedAt: number;
}

/** A training job as created; its statuses are computed from these timestamps (see emulator-training.ts). */
export interface TrainingJobRecord {
  name: string;
  arn: string;
  createdAt: number;
  /** The CreateTrainingJob members echoed by DescribeTrainingJob (Tags left out). */
  request: Record<string, unknown>;
  /** The phase durations in force when the job was created, so a restart with other settings does not rewrite its past. */
  plan: { startingMs: number; downloadingMs: number; trainingMs: number; uploadingMs: number; stoppingMs: number };
  /** Why failure is injected (name match or hyperparameter); absent for a job that succeeds. */
  injectedFailure?: string;
  stopRequestedAt?: number;
  /** When the model artifact was written and the job completed. */
  completedAt?: number;
  /** When writing the model artifact failed, and why. */
  artifactFailedAt?: number;
  artifactError?: string;
}

interface Snapshot {
  models: Record<string, ModelRecord>;
  endpointConfigs: Record<string, EndpointConfigRecord>;
  endpoints: Record<string, EndpointRecord>;
  scalableTargets: Record<string, ScalableTargetRecord>;
  scalingPolicies: Record<string, ScalingPolicyRecord>;
  alarms: Record<string, AlarmRecord>;
  trainingJobs: Record<string, TrainingJobRecord>;
}

const empty = (): Snapshot => ({ models: {}, endpointConfigs: {}, endpoints: {}, scalableTargets: {}, scalingPolicies: {}, alarms: {}, trainingJobs: {} });

/**
 * The emulator's resources. Transitions are computed from timestamps when read, so the state file
 * holds no timers and a restart continues where it stopped.
 */
export class EmulatorState {
  private data: Snapshot;

  constructor(
    readonly settings: EmulatorSettings,
    private readonly now: () => number = Date.now,
  ) {
    this.data = settings.stateFile && existsSync(settings.stateFile) ? { ...empty(), ...(JSON.parse(readFileSync(settings.stateFile, "utf8")) as Partial<Snapshot>) } : empty();
  }

  get models() {
    return this.data.models;
  }
  get endpointConfigs() {
    return this.data.endpointConfigs;
  }
  get scalableTargets() {
    return this.data.scalableTargets;
  }
  get scalingPolicies() {
    return this.data.scalingPolicies;
  }
  get alarms() {
    return this.data.alarms;
  }
  get trainingJobs() {
    return this.data.trainingJobs;
  }

  arn(kind: string, name: string): string {
    return `arn:aws:sagemaker:${this.settings.region}:${this.settings.accountId}:${kind}/${name.toLowerCase()}`;
  }

  nowMs(): number {
    return this.now();
  }

  /** The endpoint as SageMaker would show it now (finishing due transitions), or undefined when gone. */
  endpoint(name: string): EndpointRecord | undefined {
    const e = this.data.endpoints[name];
    if (!e) return undefined;
    this.settle(e);
    return this.data.endpoints[name];
  }

  endpoints(): EndpointRecord[] {
    for (const e of Object.values(this.data.endpoints)) this.settle(e);
    return Object.values(this.data.endpoints);
  }

  putEndpoint(e: EndpointRecord): void {
    this.data.endpoints[e.name] = e;
    this.save();
  }

  private settle(e: EndpointRecord): void {
    const now = this.now();
    if (now < e.transitionAt) return;
    if (e.status === "Creating" || e.status === "Updating") {
      const config = this.data.endpointConfigs[e.configName];
      const failing = config?.variants.find((v) => this.settings.failInstanceTypes.includes(v.instanceType));
      if (e.status === "Creating" && failing) {
        e.status = "Failed";
        e.failureReason = `The account-level service limit '${failing.instanceType} for endpoint usage' is 0 Instances, with current utilization of 0 Instances and a request delta of ${failing.initialInstanceCount} Instances. Please use AWS Service Quotas to request an increase for this quota. If AWS Service Quotas is not available, contact AWS support to request an increase for this quota.`;
        e.current = Object.fromEntries(Object.keys(e.desired).map((k) => [k, 0]));
      } else {
        e.status = "InService";
        e.current = { ...e.desired };
      }
      e.lastModifiedAt = e.transitionAt;
      this.save();
    } else if (e.status === "Deleting") {
      delete this.data.endpoints[e.name];
      for (const key of Object.keys(this.data.scalableTargets)) {
        if (key.includes(`endpoint/${e.name}/`)) delete this.data.scalableTargets[key];
      }
      this.save();
    }
  }

  save(): void {
    const file = this.settings.stateFile;
    if (!file) return;
    mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.data));
    renameSync(tmp, file);
  }
}

/** The S3 client the emulator's invocations and training jobs use to read inputs and write outputs. */
export function createEmulatorS3Client(settings: EmulatorSettings): S3Client {
  const s3 = settings.s3 ?? {};
  return new S3Client({
    region: s3.region ?? settings.region,
    ...(s3.endpoint ? { endpoint: s3.endpoint } : {}),
    ...(s3.credentials ? { credentials: s3.credentials } : {}),
    ...(s3.forcePathStyle !== undefined ? { forcePathStyle: s3.forcePathStyle } : {}),
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    maxAttempts: 3,
  });
}
