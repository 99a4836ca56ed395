import { gzipSync } from "node:zlib";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { AwsError, ROLE_ARN, S3_URI, seconds, validation, Violations, type Operation } from "./emulator-operations.js";
import { createEmulatorS3Client, type EmulatorState, type TrainingJobRecord } from "./emulator-state.js";

/**
 * The emulator's SageMaker training jobs: CreateTrainingJob, DescribeTrainingJob, StopTrainingJob
 * and ListTrainingJobs. A job's statuses are computed from its timestamps when read (like endpoints),
 * walking SecondaryStatus Starting (LaunchingMLInstances, PreparingTrainingStack) → Downloading →
 * Training → Uploading → Completed, or to Failed (injected AlgorithmError), Stopping → Stopped
 * (StopTrainingJob), or Stopping → Stopped with SecondaryStatus MaxRuntimeExceeded. The one effect
 * that is not computed is the model artifact: when Uploading is due to end, a small gzip'd tar with
 * a placeholder `model.safetensors` is written to `<S3OutputPath>/<TrainingJobName>/output/model.tar.gz`,
 * and the job is Completed once it is there. Stopped jobs write no artifact. A job in progress
 * continues by its timestamps after a restart (the state file), its artifact written by the new process.
 */

type Body = Record<string, unknown>;

/** SageMaker's training instance types of the families Diffgate may train on. */
export const TRAINING_INSTANCE_TYPES = [
  "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge", "ml.m5.12xlarge", "ml.m5.24xlarge",
  "ml.c5.xlarge", "ml.c5.2xlarge", "ml.c5.4xlarge", "ml.c5.9xlarge", "ml.c5.18xlarge",
  "ml.p3.2xlarge", "ml.p3.8xlarge", "ml.p3.16xlarge",
  "ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g4dn.4xlarge", "ml.g4dn.8xlarge", "ml.g4dn.12xlarge", "ml.g4dn.16xlarge",
  "ml.g5.xlarge", "ml.g5.2xlarge", "ml.g5.4xlarge", "ml.g5.8xlarge", "ml.g5.12xlarge", "ml.g5.16xlarge", "ml.g5.24xlarge", "ml.g5.48xlarge",
];

const TRAINING_INPUT_MODES = ["Pipe", "File", "FastFile"];
const S3_DATA_TYPES = ["ManifestFile", "S3Prefix", "AugmentedManifestFile"];
const JOB_STATUSES = ["InProgress", "Completed", "Failed", "Stopping", "Stopped"];
const CHANNEL_NAME = /^[A-Za-z0-9.\-_]+$/;
const MAX_RUNTIME = 2_419_200;
const S3_URI_TEXT = "^(https|s3)://([^/]+)/?(.*)$";

export type TrainingJobStatus = "InProgress" | "Completed" | "Failed" | "Stopping" | "Stopped";

export interface SecondaryTransition {
  Status: string;
  StartTime: number;
  EndTime?: number;
  StatusMessage: string;
}

/** A training job as SageMaker would show it at one moment. Times are epoch ms. */
export interface TrainingView {
  status: TrainingJobStatus;
  secondaryStatus: string;
  transitions: Array<{ status: string; start: number; end?: number; message: string }>;
  trainingStartTime?: number;
  trainingEndTime?: number;
  lastModifiedTime: number;
  failureReason?: string;
  /** Training progress 0..1 and when it was measured, once Training started. */
  progress?: { fraction: number; at: number };
  /** Uploading is over and the artifact is still to be written. */
  artifactDue: boolean;
}

const MESSAGES = {
  Starting: "Starting the training job",
  LaunchingMLInstances: "Launching requested ML instances",
  PreparingTrainingStack: "Preparing the instances for training",
  Downloading: "Downloading input data",
  Training: "Training image download completed. Training in progress.",
  Uploading: "Uploading generated training model",
  Completed: "Training job completed",
  Failed: "Training job failed",
  Stopping: "Stopping the training job",
  Stopped: "Training job stopped",
};

/** Computes a training job's statuses at `now` from its timestamps. */
export function trainingView(job: TrainingJobRecord, now: number): TrainingView {
  const { plan } = job;
  const c = job.createdAt;
  const tStart = c + plan.startingMs;
  const tTrain = tStart + plan.downloadingMs;
  const tUpload = tTrain + plan.trainingMs;
  const tDone = tUpload + plan.uploadingMs;
  const maxRuntimeMs = Number((job.request.StoppingCondition as Body | undefined)?.MaxRuntimeInSeconds ?? MAX_RUNTIME) * 1000;

  // The first interruption that happened, if any: failure, max runtime, stop, or a failed artifact write.
  const candidates: Array<{ kind: "fail" | "maxRuntime" | "stop" | "artifact"; at: number }> = [];
  if (job.injectedFailure !== undefined && tTrain + plan.trainingMs / 2 < tDone) candidates.push({ kind: "fail", at: tTrain + Math.floor(plan.trainingMs / 2) });
  if (tStart + maxRuntimeMs < tDone) candidates.push({ kind: "maxRuntime", at: tStart + maxRuntimeMs });
  if (job.stopRequestedAt !== undefined) candidates.push({ kind: "stop", at: job.stopRequestedAt });
  if (job.artifactFailedAt !== undefined) candidates.push({ kind: "artifact", at: job.artifactFailedAt });
  candidates.sort((a, b) => a.at - b.at);
  const first = candidates[0];
  const interrupt = first && first.at <= now && (job.completedAt === undefined || first.at < job.completedAt) ? first : undefined;
  const completed = !interrupt && job.completedAt !== undefined;
  const cutoff = interrupt ? interrupt.at : completed ? job.completedAt! : now;

  const phases = [
    { status: "Starting", start: c, end: tStart },
    { status: "Downloading", start: tStart, end: tTrain },
    { status: "Training", start: tTrain, end: tUpload },
    { status: "Uploading", start: tUpload, end: completed ? job.completedAt! : tDone },
  ];
  const transitions: TrainingView["transitions"] = [];
  for (const [i, p] of phases.entries()) {
    if (i > 0 && (p.start > cutoff || (interrupt && p.start === cutoff))) break;
    const ended = i < phases.length - 1 ? p.end <= cutoff : completed;
    let message = MESSAGES[p.status as keyof typeof MESSAGES];
    if (p.status === "Starting") {
      const third = plan.startingMs / 3;
      message = ended || cutoff >= c + 2 * third ? MESSAGES.PreparingTrainingStack : cutoff >= c + third ? MESSAGES.LaunchingMLInstances : MESSAGES.Starting;
    }
    transitions.push({ status: p.status, start: p.start, ...(ended ? { end: p.end } : interrupt ? { end: interrupt.at } : {}), message });
    if (!ended) break;
  }
  const current = transitions[transitions.length - 1]!;
  let status: TrainingJobStatus = "InProgress";
  let secondaryStatus = current.status;
  if (secondaryStatus === "Starting" && !interrupt) {
    secondaryStatus = current.message === MESSAGES.PreparingTrainingStack ? "PreparingTrainingStack" : current.message === MESSAGES.LaunchingMLInstances ? "LaunchingMLInstances" : "Starting";
  }
  let end: number | undefined;
  let failureReason: string | undefined;
  if (completed) {
    end = job.completedAt!;
    transitions.push({ status: "Completed", start: end, end, message: MESSAGES.Completed });
    status = "Completed";
    secondaryStatus = "Completed";
  } else if (interrupt?.kind === "fail" || interrupt?.kind === "artifact") {
    end = interrupt.at;
    failureReason =
      interrupt.kind === "fail"
        ? `AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "RuntimeError: emulated training failure (${job.injectedFailure})"\nCommand "/usr/bin/python3 train.py", exit code: 1`
        : `ClientError: ${job.artifactError ?? "Could not write the model artifact"}`;
    transitions.push({ status: "Failed", start: end, end, message: `${MESSAGES.Failed}. Reason: ${failureReason.split("\n")[0]!}` });
    status = "Failed";
    secondaryStatus = "Failed";
  } else if (interrupt) {
    const stoppedAt = interrupt.at + job.plan.stoppingMs;
    const done = now >= stoppedAt;
    transitions.push({ status: "Stopping", start: interrupt.at, ...(done ? { end: stoppedAt } : {}), message: MESSAGES.Stopping });
    if (done) {
      end = stoppedAt;
      const maxRuntime = interrupt.kind === "maxRuntime";
      transitions.push({
        status: maxRuntime ? "MaxRuntimeExceeded" : "Stopped",
        start: stoppedAt,
        end: stoppedAt,
        message: maxRuntime ? `Training job stopped because it exceeded its MaxRuntimeInSeconds of ${maxRuntimeMs / 1000} seconds` : MESSAGES.Stopped,
      });
      status = "Stopped";
      secondaryStatus = maxRuntime ? "MaxRuntimeExceeded" : "Stopped";
    } else {
      status = "Stopping";
      secondaryStatus = "Stopping";
    }
  }
  const last = transitions[transitions.length - 1]!;
  const measuredAt = Math.min(end ?? now, cutoff, tUpload);
  return {
    status,
    secondaryStatus,
    transitions,
    ...(cutoff >= tStart && (cutoff > tStart || !interrupt) ? { trainingStartTime: tStart } : {}),
    ...(end !== undefined ? { trainingEndTime: end } : {}),
    lastModifiedTime: last.end ?? last.start,
    ...(failureReason ? { failureReason } : {}),
    ...(cutoff >= tTrain && transitions.some((t) => t.status === "Training") ? { progress: { fraction: plan.trainingMs > 0 ? Math.min(1, Math.max(0, (measuredAt - tTrain) / plan.trainingMs)) : 1, at: measuredAt } } : {}),
    artifactDue: status === "InProgress" && now >= tDone && job.completedAt === undefined,
  };
}

// ---------------------------------------------------------------------------------------------
// The model artifact: model.tar.gz with one placeholder model.safetensors.

/** A valid safetensors file holding one tiny tensor, its metadata saying it is an emulator placeholder. */
export function placeholderSafetensors(jobName: string): Buffer {
  const header = JSON.stringify({
    __metadata__: { format: "pt", emulated: "true", note: "Placeholder written by the Diffgate SageMaker emulator; not a trained model.", training_job: jobName },
    "emulated.placeholder": { dtype: "F32", shape: [1], data_offsets: [0, 4] },
  });
  const padded = header + " ".repeat((8 - (Buffer.byteLength(header) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(padded)));
  const data = Buffer.alloc(4);
  data.writeFloatLE(0);
  return Buffer.concat([length, Buffer.from(padded, "utf8"), data]);
}

/** A POSIX ustar archive of regular files (names under 100 bytes). */
export function tar(files: Array<{ name: string; content: Buffer; mtime?: number }>): Buffer {
  const blocks: Buffer[] = [];
  for (const f of files) {
    const h = Buffer.alloc(512);
    const field = (offset: number, length: number, value: string) => h.write(value, offset, length, "ascii");
    const octal = (offset: number, length: number, n: number) => field(offset, length, `${n.toString(8).padStart(length - 1, "0")}\0`);
    if (Buffer.byteLength(f.name) > 99) throw new Error(`tar entry name too long: ${f.name}`);
    field(0, 100, f.name);
    octal(100, 8, 0o644);
    octal(108, 8, 0);
    octal(116, 8, 0);
    octal(124, 12, f.content.length);
    octal(136, 12, Math.floor((f.mtime ?? Date.now()) / 1000));
    field(148, 8, "        ");
    field(156, 1, "0");
    field(257, 6, "ustar\0");
    field(263, 2, "00");
    field(265, 32, "root");
    field(297, 32, "root");
    let sum = 0;
    for (const byte of h) sum += byte;
    field(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
    blocks.push(h, f.content, Buffer.alloc((512 - (f.content.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export function modelArtifact(jobName: string, at: number): Buffer {
  return gzipSync(tar([{ name: "model.safetensors", content: placeholderSafetensors(jobName), mtime: at }]));
}

/** `<S3OutputPath>/<TrainingJobName>/output/model.tar.gz`. */
export function artifactUri(job: TrainingJobRecord): string {
  const output = String((job.request.OutputDataConfig as Body).S3OutputPath).replace(/\/+$/, "");
  return `${output}/${job.name}/output/model.tar.gz`;
}

// ---------------------------------------------------------------------------------------------
// Metrics a client can show while training: epoch, step, loss.

function intHyperParameter(hp: Record<string, string>, names: string[]): number | undefined {
  for (const n of names) {
    const v = Number.parseInt(hp[n] ?? "", 10);
    if (Number.isFinite(v) && v > 0) return v;
  }
  return undefined;
}

function metrics(job: TrainingJobRecord, progress: { fraction: number; at: number }) {
  const hp = (job.request.HyperParameters as Record<string, string> | undefined) ?? {};
  const epochs = intHyperParameter(hp, ["epochs", "max_train_epochs", "num_train_epochs", "epoch"]) ?? 10;
  const steps = intHyperParameter(hp, ["max_train_steps", "steps"]) ?? epochs * 100;
  const p = progress.fraction;
  const step = Math.round(p * steps);
  let h = 0;
  for (const ch of `${job.name}:${step}`) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  const loss = 0.06 + 0.22 * Math.exp(-3 * p) + ((h % 1000) / 1000 - 0.5) * 0.02;
  const Timestamp = seconds(progress.at);
  return [
    { MetricName: "epoch", Value: Math.min(epochs, Math.floor(p * epochs)), Timestamp },
    { MetricName: "step", Value: step, Timestamp },
    { MetricName: "loss", Value: Math.round(loss * 10_000) / 10_000, Timestamp },
  ];
}

// ---------------------------------------------------------------------------------------------
// Validation.

function validateCreate(state: EmulatorState, b: Body): void {
  const v = new Violations();
  v.name(b.TrainingJobName, "trainingJobName");
  if (v.required(b.RoleArn, "roleArn") && (typeof b.RoleArn !== "string" || !ROLE_ARN.test(b.RoleArn))) {
    v.add(`Value '${String(b.RoleArn)}' at 'roleArn' failed to satisfy constraint: Member must satisfy regular expression pattern: ^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$`);
  }
  const algorithm = b.AlgorithmSpecification as Body | undefined;
  if (v.required(algorithm, "algorithmSpecification")) {
    if (v.required(algorithm!.TrainingImage, "algorithmSpecification.trainingImage") && String(algorithm!.TrainingImage).length > 255) {
      v.add(`Value '${String(algorithm!.TrainingImage)}' at 'algorithmSpecification.trainingImage' failed to satisfy constraint: Member must have length less than or equal to 255`);
    }
    if (v.required(algorithm!.TrainingInputMode, "algorithmSpecification.trainingInputMode") && !TRAINING_INPUT_MODES.includes(String(algorithm!.TrainingInputMode))) {
      v.add(`Value '${String(algorithm!.TrainingInputMode)}' at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must satisfy enum value set: [${TRAINING_INPUT_MODES.join(", ")}]`);
    }
  }
  const output = b.OutputDataConfig as Body | undefined;
  if (v.required(output, "outputDataConfig") && v.required(output!.S3OutputPath, "outputDataConfig.s3OutputPath") && !S3_URI.test(String(output!.S3OutputPath))) {
    v.add(`Value '${String(output!.S3OutputPath)}' at 'outputDataConfig.s3OutputPath' failed to satisfy constraint: Member must satisfy regular expression pattern: ${S3_URI_TEXT}`);
  }
  const resources = b.ResourceConfig as Body | undefined;
  if (v.required(resources, "resourceConfig")) {
    if (v.required(resources!.InstanceType, "resourceConfig.instanceType") && !TRAINING_INSTANCE_TYPES.includes(String(resources!.InstanceType))) {
      v.add(`Value '${String(resources!.InstanceType)}' at 'resourceConfig.instanceType' failed to satisfy constraint: Member must satisfy enum value set: [${TRAINING_INSTANCE_TYPES.join(", ")}]`);
    }
    if (v.required(resources!.InstanceCount, "resourceConfig.instanceCount") && !(Number.isInteger(resources!.InstanceCount) && (resources!.InstanceCount as number) >= 1)) {
      v.add(`Value '${String(resources!.InstanceCount)}' at 'resourceConfig.instanceCount' failed to satisfy constraint: Member must have value greater than or equal to 1`);
    }
    if (v.required(resources!.VolumeSizeInGB, "resourceConfig.volumeSizeInGB") && !(Number.isInteger(resources!.VolumeSizeInGB) && (resources!.VolumeSizeInGB as number) >= 1)) {
      v.add(`Value '${String(resources!.VolumeSizeInGB)}' at 'resourceConfig.volumeSizeInGB' failed to satisfy constraint: Member must have value greater than or equal to 1`);
    }
  }
  const stopping = b.StoppingCondition as Body | undefined;
  if (v.required(stopping, "stoppingCondition") && v.required(stopping!.MaxRuntimeInSeconds, "stoppingCondition.maxRuntimeInSeconds")) {
    const max = stopping!.MaxRuntimeInSeconds;
    if (!Number.isInteger(max) || (max as number) < 1) v.add(`Value '${String(max)}' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 1`);
    else if ((max as number) > MAX_RUNTIME) v.add(`Value '${String(max)}' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value less than or equal to ${MAX_RUNTIME}`);
  }
  if (stopping?.MaxWaitTimeInSeconds !== undefined && !(Number.isInteger(stopping.MaxWaitTimeInSeconds) && (stopping.MaxWaitTimeInSeconds as number) >= 1)) {
    v.add(`Value '${String(stopping.MaxWaitTimeInSeconds)}' at 'stoppingCondition.maxWaitTimeInSeconds' failed to satisfy constraint: Member must have value greater than or equal to 1`);
  }
  const hp = b.HyperParameters;
  if (hp !== undefined && hp !== null) {
    if (typeof hp !== "object" || Array.isArray(hp)) v.add("Value at 'hyperParameters' failed to satisfy constraint: Member must be a map of strings");
    else {
      const entries = Object.entries(hp as Body);
      if (entries.length > 100) v.add(`Value at 'hyperParameters' failed to satisfy constraint: Member must have length less than or equal to 100`);
      if (entries.some(([k]) => k.length > 256)) v.add("Value at 'hyperParameters' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 256, Member must satisfy regular expression pattern: .*]");
      if (entries.some(([, val]) => typeof val !== "string" || val.length > 2500)) {
        v.add("Value at 'hyperParameters' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 2500, Member must satisfy regular expression pattern: .*]");
      }
    }
  }
  const channels = b.InputDataConfig;
  if (channels !== undefined && channels !== null) {
    if (!Array.isArray(channels) || channels.length < 1 || channels.length > 20) {
      v.add(`Value at 'inputDataConfig' failed to satisfy constraint: Member must have length ${Array.isArray(channels) && channels.length > 20 ? "less than or equal to 20" : "greater than or equal to 1"}`);
    } else {
      (channels as Body[]).forEach((ch, i) => {
        const at = `inputDataConfig.${i + 1}.member`;
        if (v.required(ch.ChannelName, `${at}.channelName`) && !(typeof ch.ChannelName === "string" && ch.ChannelName.length <= 64 && CHANNEL_NAME.test(ch.ChannelName))) {
          v.add(`Value '${String(ch.ChannelName)}' at '${at}.channelName' failed to satisfy constraint: Member must satisfy regular expression pattern: [A-Za-z0-9\\.\\-_]+`);
        }
        const source = ch.DataSource as Body | undefined;
        if (!v.required(source, `${at}.dataSource`)) return;
        const s3 = source!.S3DataSource as Body | undefined;
        if (!v.required(s3, `${at}.dataSource.s3DataSource`)) return;
        if (v.required(s3!.S3DataType, `${at}.dataSource.s3DataSource.s3DataType`) && !S3_DATA_TYPES.includes(String(s3!.S3DataType))) {
          v.add(`Value '${String(s3!.S3DataType)}' at '${at}.dataSource.s3DataSource.s3DataType' failed to satisfy constraint: Member must satisfy enum value set: [${S3_DATA_TYPES.join(", ")}]`);
        }
        if (v.required(s3!.S3Uri, `${at}.dataSource.s3DataSource.s3Uri`) && !S3_URI.test(String(s3!.S3Uri))) {
          v.add(`Value '${String(s3!.S3Uri)}' at '${at}.dataSource.s3DataSource.s3Uri' failed to satisfy constraint: Member must satisfy regular expression pattern: ${S3_URI_TEXT}`);
        }
      });
    }
  }
  const checkpoint = b.CheckpointConfig as Body | undefined;
  if (checkpoint && v.required(checkpoint.S3Uri, "checkpointConfig.s3Uri") && !S3_URI.test(String(checkpoint.S3Uri))) {
    v.add(`Value '${String(checkpoint.S3Uri)}' at 'checkpointConfig.s3Uri' failed to satisfy constraint: Member must satisfy regular expression pattern: ${S3_URI_TEXT}`);
  }
  v.throwIfAny();

  // Checks SageMaker makes after the members' constraints.
  if (!String(output!.S3OutputPath).startsWith("s3://")) throw validation(`The emulator writes model artifacts to s3:// output paths only, not ${String(output!.S3OutputPath)}.`);
  if (Array.isArray(channels)) {
    const names = (channels as Body[]).map((ch) => String(ch.ChannelName));
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup !== undefined) throw validation(`Channel names must be unique. Duplicate channel name: ${dup}`);
  }
  const spot = b.EnableManagedSpotTraining === true;
  if (spot) {
    if (!checkpoint) throw validation("CheckpointConfig with an S3Uri must be specified when EnableManagedSpotTraining is true.");
    const wait = stopping!.MaxWaitTimeInSeconds;
    if (typeof wait !== "number" || wait < (stopping!.MaxRuntimeInSeconds as number)) {
      throw validation("Invalid MaxWaitTimeInSeconds. It must be present and be greater than or equal to MaxRuntimeInSeconds");
    }
  } else if (stopping!.MaxWaitTimeInSeconds !== undefined) {
    throw validation("MaxWaitTimeInSeconds can only be specified when EnableManagedSpotTraining is true.");
  }
  const name = b.TrainingJobName as string;
  if (state.trainingJobs[name]) {
    throw new AwsError(400, "ResourceInUse", `Training job names must be unique within an AWS account and region, and a training job with this name already exists (${state.trainingJobs[name].arn})`);
  }
}

const ECHOED = [
  "HyperParameters", "AlgorithmSpecification", "RoleArn", "InputDataConfig", "OutputDataConfig", "ResourceConfig", "VpcConfig", "StoppingCondition",
  "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining", "CheckpointConfig", "Environment", "RetryStrategy",
] as const;

// ---------------------------------------------------------------------------------------------

/** Serves the training-job operations and writes the model artifacts of jobs that are due. */
export class TrainingEngine {
  private readonly writing = new Set<string>();
  private readonly stopController = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private s3Client?: S3Client;

  constructor(
    private readonly state: EmulatorState,
    tickMs = 50,
  ) {
    this.timer = setInterval(() => this.tick(), tickMs);
    this.timer.unref();
  }

  private get s3(): S3Client {
    this.s3Client ??= createEmulatorS3Client(this.state.settings);
    return this.s3Client;
  }

  /** Writes the artifacts that are due (also called on every read, so a poller never waits on the timer). */
  tick(): void {
    const now = this.state.nowMs();
    for (const job of Object.values(this.state.trainingJobs)) {
      if (job.completedAt === undefined && job.artifactFailedAt === undefined && !this.writing.has(job.name) && trainingView(job, now).artifactDue) void this.writeArtifact(job);
    }
  }

  private async writeArtifact(job: TrainingJobRecord): Promise<void> {
    this.writing.add(job.name);
    const uri = artifactUri(job);
    try {
      const match = /^s3:\/\/([^/]+)\/(.+)$/.exec(uri)!;
      await this.s3.send(new PutObjectCommand({ Bucket: match[1]!, Key: match[2]!, Body: modelArtifact(job.name, this.state.nowMs()), ContentType: "application/gzip" }), { abortSignal: this.stopController.signal });
      if (this.stopController.signal.aborted) return;
      const current = this.state.trainingJobs[job.name];
      // A StopTrainingJob that arrived while writing wins; SageMaker would have reported Stopping already.
      if (current === job && job.stopRequestedAt === undefined) {
        job.completedAt = this.state.nowMs();
        this.state.save();
      }
    } catch (e) {
      if (this.stopController.signal.aborted) return;
      const current = this.state.trainingJobs[job.name];
      if (current === job && job.stopRequestedAt === undefined) {
        job.artifactFailedAt = this.state.nowMs();
        job.artifactError = `Could not upload the model artifact to ${uri}: ${(e as Error).name}: ${(e as Error).message}`;
        this.state.save();
      }
    } finally {
      this.writing.delete(job.name);
    }
  }

  private job(name: unknown): TrainingJobRecord {
    const v = new Violations();
    v.name(name, "trainingJobName");
    v.throwIfAny();
    const job = this.state.trainingJobs[name as string];
    if (!job) throw validation("Requested resource not found.");
    return job;
  }

  describe(job: TrainingJobRecord): Body {
    const view = trainingView(job, this.state.nowMs());
    const spot = job.request.EnableManagedSpotTraining === true;
    const ended = view.trainingEndTime !== undefined && view.trainingStartTime !== undefined;
    const trainingSeconds = ended ? Math.max(1, Math.round((view.trainingEndTime! - view.trainingStartTime!) / 1000)) : undefined;
    const echoed = Object.fromEntries(ECHOED.flatMap((k) => (job.request[k] !== undefined ? [[k, job.request[k]]] : [])));
    return {
      TrainingJobName: job.name,
      TrainingJobArn: job.arn,
      ModelArtifacts: view.status === "Completed" ? { S3ModelArtifacts: artifactUri(job) } : {},
      TrainingJobStatus: view.status,
      SecondaryStatus: view.secondaryStatus,
      ...(view.failureReason ? { FailureReason: view.failureReason } : {}),
      ...echoed,
      EnableNetworkIsolation: job.request.EnableNetworkIsolation === true,
      EnableInterContainerTrafficEncryption: job.request.EnableInterContainerTrafficEncryption === true,
      EnableManagedSpotTraining: spot,
      CreationTime: seconds(job.createdAt),
      ...(view.trainingStartTime !== undefined ? { TrainingStartTime: seconds(view.trainingStartTime) } : {}),
      ...(view.trainingEndTime !== undefined ? { TrainingEndTime: seconds(view.trainingEndTime) } : {}),
      LastModifiedTime: seconds(view.lastModifiedTime),
      SecondaryStatusTransitions: view.transitions.map((t) => ({ Status: t.status, StartTime: seconds(t.start), ...(t.end !== undefined ? { EndTime: seconds(t.end) } : {}), StatusMessage: t.message })),
      ...(view.progress ? { FinalMetricDataList: metrics(job, view.progress) } : {}),
      ...(trainingSeconds !== undefined ? { TrainingTimeInSeconds: trainingSeconds, BillableTimeInSeconds: spot ? Math.max(1, Math.round(trainingSeconds * 0.3)) : trainingSeconds } : {}),
    };
  }

  readonly operations: Record<string, Operation> = {
    CreateTrainingJob: (state, b) => {
      validateCreate(state, b);
      const name = b.TrainingJobName as string;
      const s = state.settings;
      const hp = (b.HyperParameters as Record<string, string> | undefined) ?? {};
      const matched = s.failTrainingJobsMatching.find((m) => m !== "" && name.includes(m));
      const injectedFailure = matched !== undefined ? `name matches "${matched}"` : hp.emulator_fail === "true" ? "hyperparameter emulator_fail" : undefined;
      const request = Object.fromEntries(Object.entries(b).filter(([k]) => k !== "Tags" && k !== "TrainingJobName"));
      const job: TrainingJobRecord = {
        name,
        arn: state.arn("training-job", name),
        createdAt: state.nowMs(),
        request,
        plan: { startingMs: s.trainingStartingMs, downloadingMs: s.trainingDownloadingMs, trainingMs: s.trainingTrainingMs, uploadingMs: s.trainingUploadingMs, stoppingMs: s.trainingStoppingMs },
        ...(injectedFailure ? { injectedFailure } : {}),
      };
      state.trainingJobs[name] = job;
      state.save();
      return { TrainingJobArn: job.arn };
    },

    DescribeTrainingJob: (_state, b) => {
      const job = this.job(b.TrainingJobName);
      this.tick();
      return this.describe(job);
    },

    StopTrainingJob: (state, b) => {
      const job = this.job(b.TrainingJobName);
      const view = trainingView(job, state.nowMs());
      if (view.status !== "InProgress") throw validation(`The request was rejected because the training job is in status ${view.status}.`);
      job.stopRequestedAt = state.nowMs();
      state.save();
      return {};
    },

    ListTrainingJobs: (state, b) => {
      const v = new Violations();
      const max = b.MaxResults ?? 10;
      if (typeof max !== "number" || !Number.isInteger(max) || max < 1 || max > 100) v.add(`Value '${String(max)}' at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100`);
      if (b.StatusEquals !== undefined && !JOB_STATUSES.includes(String(b.StatusEquals))) {
        v.add(`Value '${String(b.StatusEquals)}' at 'statusEquals' failed to satisfy constraint: Member must satisfy enum value set: [${JOB_STATUSES.join(", ")}]`);
      }
      const sortBy = b.SortBy ?? "CreationTime";
      if (!["Name", "CreationTime", "Status"].includes(String(sortBy))) v.add(`Value '${String(sortBy)}' at 'sortBy' failed to satisfy constraint: Member must satisfy enum value set: [Name, CreationTime, Status]`);
      const sortOrder = b.SortOrder ?? "Descending";
      if (!["Ascending", "Descending"].includes(String(sortOrder))) v.add(`Value '${String(sortOrder)}' at 'sortOrder' failed to satisfy constraint: Member must satisfy enum value set: [Ascending, Descending]`);
      v.throwIfAny();
      this.tick();
      const now = state.nowMs();
      const num = (x: unknown) => (typeof x === "number" ? x * 1000 : undefined);
      const [after, before, modAfter, modBefore] = [num(b.CreationTimeAfter), num(b.CreationTimeBefore), num(b.LastModifiedTimeAfter), num(b.LastModifiedTimeBefore)];
      const rows = Object.values(state.trainingJobs)
        .map((job) => ({ job, view: trainingView(job, now) }))
        .filter(({ job }) => (typeof b.NameContains === "string" ? job.name.includes(b.NameContains) : true))
        .filter(({ view }) => (b.StatusEquals !== undefined ? view.status === b.StatusEquals : true))
        .filter(({ job }) => (after === undefined || job.createdAt > after) && (before === undefined || job.createdAt < before))
        .filter(({ view }) => (modAfter === undefined || view.lastModifiedTime > modAfter) && (modBefore === undefined || view.lastModifiedTime < modBefore))
        .sort((x, y) => {
          const c = sortBy === "Name" ? x.job.name.localeCompare(y.job.name) : sortBy === "Status" ? x.view.status.localeCompare(y.view.status) : x.job.createdAt - y.job.createdAt;
          const tie = c !== 0 ? c : x.job.name.localeCompare(y.job.name);
          return sortOrder === "Ascending" ? tie : -tie;
        });
      const start = typeof b.NextToken === "string" ? Number(b.NextToken) || 0 : 0;
      const page = rows.slice(start, start + (max as number));
      return {
        TrainingJobSummaries: page.map(({ job, view }) => ({
          TrainingJobName: job.name,
          TrainingJobArn: job.arn,
          CreationTime: seconds(job.createdAt),
          ...(view.trainingEndTime !== undefined ? { TrainingEndTime: seconds(view.trainingEndTime) } : {}),
          LastModifiedTime: seconds(view.lastModifiedTime),
          TrainingJobStatus: view.status,
          SecondaryStatus: view.secondaryStatus,
        })),
        ...(start + (max as number) < rows.length ? { NextToken: String(start + (max as number)) } : {}),
      };
    },
  };

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.stopController.abort();
    this.s3Client?.destroy();
  }
}
