import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import {
  CreateTrainingJobCommand,
  DescribeTrainingJobCommand,
  ListTrainingJobsCommand,
  SageMakerClient,
  StopTrainingJobCommand,
  type CreateTrainingJobCommandInput,
  type DescribeTrainingJobCommandOutput,
} from "@aws-sdk/client-sagemaker";
import { startEmbeddedS3, type RunningS3 } from "../../src/local/embedded-s3.js";
import type { EmulatorSettings } from "../../src/local/emulator-state.js";
import { startSageMakerEmulator, type SageMakerEmulator } from "../../src/local/sagemaker-emulator.js";
import { refusal } from "../helpers/aws-refusal.js";

const BUCKET = "diffgate-training";
const ROLE = "arn:aws:iam::000000000000:role/Exec";
const credentials = { accessKeyId: "emulator", secretAccessKey: "emulator" };
const TIMINGS = { trainingStartingMs: 60, trainingDownloadingMs: 60, trainingTrainingMs: 400, trainingUploadingMs: 60, trainingStoppingMs: 80 };

let dir: string;
let s3server: RunningS3;
let emulator: SageMakerEmulator;
let sm: SageMakerClient;
let s3: S3Client;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function jobInput(name: string, overrides: Partial<CreateTrainingJobCommandInput> = {}): CreateTrainingJobCommandInput {
  return {
    TrainingJobName: name,
    RoleArn: ROLE,
    AlgorithmSpecification: { TrainingImage: "000000000000.dkr.ecr.us-east-1.amazonaws.com/kohya:latest", TrainingInputMode: "File" },
    InputDataConfig: [{ ChannelName: "train", DataSource: { S3DataSource: { S3DataType: "S3Prefix", S3Uri: `s3://${BUCKET}/datasets/d1/` } } }],
    OutputDataConfig: { S3OutputPath: `s3://${BUCKET}/training-output/` },
    ResourceConfig: { InstanceType: "ml.g5.2xlarge", InstanceCount: 1, VolumeSizeInGB: 50 },
    StoppingCondition: { MaxRuntimeInSeconds: 3600 },
    HyperParameters: { max_train_epochs: "4", max_train_steps: "400" },
    ...overrides,
  };
}

const describeJob = (client: SageMakerClient, name: string) => client.send(new DescribeTrainingJobCommand({ TrainingJobName: name }));

async function waitFor(client: SageMakerClient, name: string, check: (d: DescribeTrainingJobCommandOutput) => boolean, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  const seen: string[] = [];
  for (;;) {
    const d = await describeJob(client, name);
    if (d.SecondaryStatus && seen[seen.length - 1] !== d.SecondaryStatus) seen.push(d.SecondaryStatus);
    if (check(d)) return { d, seen };
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${name} ${what}; saw ${seen.join(" → ")}`);
    await sleep(10);
  }
}

/** Reads the entries of a ustar archive, checking each header's checksum. */
function untar(buf: Buffer): Array<{ name: string; content: Buffer }> {
  const out: Array<{ name: string; content: Buffer }> = [];
  let off = 0;
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const str = (o: number, l: number) => h.subarray(o, o + l).toString("ascii").replace(/\0.*$/s, "");
    const stored = Number.parseInt(str(148, 8).trim(), 8);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    expect(sum).toBe(stored);
    expect(str(257, 6)).toBe("ustar");
    const size = Number.parseInt(str(124, 12), 8);
    out.push({ name: str(0, 100), content: buf.subarray(off + 512, off + 512 + size) });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "diffgate-training-"));
  s3server = await startEmbeddedS3(dir, BUCKET);
  emulator = await startSageMakerEmulator({
    settings: { ...TIMINGS, failTrainingJobsMatching: ["explode"], stateFile: path.join(dir, "main-state.json"), s3: { endpoint: s3server.endpoint, region: "us-east-1", credentials: s3server.credentials, forcePathStyle: true } },
  });
  sm = new SageMakerClient({ region: "us-east-1", endpoint: emulator.url, credentials, maxAttempts: 1 });
  s3 = new S3Client({ region: "us-east-1", endpoint: s3server.endpoint, credentials: s3server.credentials, forcePathStyle: true });
});

afterAll(async () => {
  sm?.destroy();
  s3?.destroy();
  await emulator?.stop();
  await s3server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("CreateTrainingJob validation", () => {
  it("refuses bad names, roles, members and instance types like SageMaker", async () => {
    const badName = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("bad_name"))));
    expect(badName).toEqual({ name: "ValidationException", status: 400, message: "1 validation error detected: Value 'bad_name' at 'trainingJobName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}" });
    const badRole = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { RoleArn: "arn:aws:iam::1:user/x" }))));
    expect(badRole.message).toMatch(/^1 validation error detected: Value 'arn:aws:iam::1:user\/x' at 'roleArn' failed to satisfy constraint: Member must satisfy regular expression pattern/);
    const missing = await refusal(sm.send(new CreateTrainingJobCommand({ TrainingJobName: "v-1", RoleArn: ROLE, AlgorithmSpecification: {} } as never)));
    expect(missing.message).toBe(
      "5 validation errors detected: Value null at 'algorithmSpecification.trainingImage' failed to satisfy constraint: Member must not be null; Value null at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must not be null; Value null at 'outputDataConfig' failed to satisfy constraint: Member must not be null; Value null at 'resourceConfig' failed to satisfy constraint: Member must not be null; Value null at 'stoppingCondition' failed to satisfy constraint: Member must not be null",
    );
    const badType = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { ResourceConfig: { InstanceType: "ml.inf2.xlarge" as never, InstanceCount: 0, VolumeSizeInGB: 0 } }))));
    expect(badType.message).toMatch(/^3 validation errors detected: Value 'ml\.inf2\.xlarge' at 'resourceConfig\.instanceType' failed to satisfy constraint: Member must satisfy enum value set: \[ml\.m5\.large, /);
    expect(badType.message).toContain("Value '0' at 'resourceConfig.instanceCount' failed to satisfy constraint: Member must have value greater than or equal to 1");
    expect(badType.message).toContain("Value '0' at 'resourceConfig.volumeSizeInGB' failed to satisfy constraint: Member must have value greater than or equal to 1");
    const runtime = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { StoppingCondition: { MaxRuntimeInSeconds: 2_419_201 } }))));
    expect(runtime.message).toBe("1 validation error detected: Value '2419201' at 'stoppingCondition.maxRuntimeInSeconds' failed to satisfy constraint: Member must have value less than or equal to 2419200");
    const noRuntime = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { StoppingCondition: {} }))));
    expect(noRuntime.message).toContain("Value null at 'stoppingCondition.maxRuntimeInSeconds'");
    const output = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { OutputDataConfig: { S3OutputPath: "/tmp/out" } }))));
    expect(output.message).toContain("Value '/tmp/out' at 'outputDataConfig.s3OutputPath' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$");
    const longValue = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { HyperParameters: { prompt: "x".repeat(2501) } }))));
    expect(longValue.message).toContain("at 'hyperParameters' failed to satisfy constraint: Map value must satisfy constraint: [Member must have length less than or equal to 2500");
    const many = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { HyperParameters: Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`k${i}`, "1"])) }))));
    expect(many.message).toContain("at 'hyperParameters' failed to satisfy constraint: Member must have length less than or equal to 100");
    const channel = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { InputDataConfig: [{ ChannelName: "train", DataSource: { S3DataSource: { S3DataType: "S3Prefix" } as never } }] }))));
    expect(channel.message).toBe("1 validation error detected: Value null at 'inputDataConfig.1.member.dataSource.s3DataSource.s3Uri' failed to satisfy constraint: Member must not be null");
    const spotNoCheckpoint = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { EnableManagedSpotTraining: true, StoppingCondition: { MaxRuntimeInSeconds: 3600, MaxWaitTimeInSeconds: 7200 } }))));
    expect(spotNoCheckpoint).toMatchObject({ name: "ValidationException", message: "CheckpointConfig with an S3Uri must be specified when EnableManagedSpotTraining is true." });
    const spotWait = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("v-1", { EnableManagedSpotTraining: true, CheckpointConfig: { S3Uri: `s3://${BUCKET}/ckpt/` }, StoppingCondition: { MaxRuntimeInSeconds: 3600, MaxWaitTimeInSeconds: 60 } }))));
    expect(spotWait.message).toBe("Invalid MaxWaitTimeInSeconds. It must be present and be greater than or equal to MaxRuntimeInSeconds");
    const unknown = await refusal(describeJob(sm, "no-such-job"));
    expect(unknown).toEqual({ name: "ValidationException", status: 400, message: "Requested resource not found." });
    expect(await refusal(sm.send(new StopTrainingJobCommand({ TrainingJobName: "no-such-job" })))).toMatchObject({ message: "Requested resource not found." });
    const list = await refusal(sm.send(new ListTrainingJobsCommand({ MaxResults: 101 })));
    expect(list.message).toContain("at 'maxResults' failed to satisfy constraint: Member must have value between 1 and 100");
  });

  it("refuses a duplicate name with ResourceInUse", async () => {
    const created = await sm.send(new CreateTrainingJobCommand(jobInput("dup-1")));
    expect(created.TrainingJobArn).toBe("arn:aws:sagemaker:us-east-1:000000000000:training-job/dup-1");
    const dup = await refusal(sm.send(new CreateTrainingJobCommand(jobInput("dup-1"))));
    expect(dup).toEqual({
      name: "ResourceInUse",
      status: 400,
      message: "Training job names must be unique within an AWS account and region, and a training job with this name already exists (arn:aws:sagemaker:us-east-1:000000000000:training-job/dup-1)",
    });
  });
});

describe("training job status walk", () => {
  it("walks to Completed with SageMaker's secondary transitions, metrics during Training, and a gzip'd tar model artifact in S3", async () => {
    await sm.send(new CreateTrainingJobCommand(jobInput("walk-1", { Tags: [{ Key: "app", Value: "diffgate" }] })));
    const first = await describeJob(sm, "walk-1");
    expect(first).toMatchObject({ TrainingJobStatus: "InProgress", TrainingJobName: "walk-1", RoleArn: ROLE, ResourceConfig: { InstanceType: "ml.g5.2xlarge" }, HyperParameters: { max_train_epochs: "4" } });
    expect(["Starting", "LaunchingMLInstances", "PreparingTrainingStack"]).toContain(first.SecondaryStatus);
    expect(first.TrainingStartTime).toBeUndefined();
    expect(first.ModelArtifacts?.S3ModelArtifacts).toBeUndefined();

    const training = await waitFor(sm, "walk-1", (d) => d.SecondaryStatus === "Training" && (d.FinalMetricDataList?.find((m) => m.MetricName === "step")?.Value ?? 0) > 0, "Training with metrics");
    expect(training.d.FinalMetricDataList?.map((m) => m.MetricName)).toEqual(["epoch", "step", "loss"]);
    expect(training.d.TrainingStartTime).toBeInstanceOf(Date);
    const loss = training.d.FinalMetricDataList?.find((m) => m.MetricName === "loss")?.Value ?? 0;
    expect(loss).toBeGreaterThan(0);
    expect(loss).toBeLessThan(1);

    const { d, seen } = await waitFor(sm, "walk-1", (x) => x.TrainingJobStatus === "Completed", "Completed");
    expect(seen.filter((s) => ["Downloading", "Training", "Uploading", "Completed"].includes(s))).toEqual(["Training", "Uploading", "Completed"]);
    expect(d.SecondaryStatus).toBe("Completed");
    const transitions = d.SecondaryStatusTransitions ?? [];
    expect(transitions.map((t) => t.Status)).toEqual(["Starting", "Downloading", "Training", "Uploading", "Completed"]);
    expect(transitions.map((t) => t.StatusMessage)).toEqual([
      "Preparing the instances for training",
      "Downloading input data",
      "Training image download completed. Training in progress.",
      "Uploading generated training model",
      "Training job completed",
    ]);
    for (const [i, t] of transitions.entries()) {
      expect(t.EndTime).toBeInstanceOf(Date);
      expect(t.EndTime!.getTime()).toBeGreaterThanOrEqual(t.StartTime!.getTime());
      if (i > 0) expect(t.StartTime!.getTime()).toBe(transitions[i - 1]!.EndTime!.getTime());
    }
    expect(d.TrainingStartTime!.getTime()).toBe(transitions[1]!.StartTime!.getTime());
    expect(d.TrainingEndTime!.getTime()).toBe(transitions[4]!.StartTime!.getTime());
    expect(d.TrainingTimeInSeconds).toBeGreaterThanOrEqual(1);
    expect(d.FinalMetricDataList?.find((m) => m.MetricName === "epoch")?.Value).toBe(4);
    expect(d.FinalMetricDataList?.find((m) => m.MetricName === "step")?.Value).toBe(400);
    expect(d.ModelArtifacts?.S3ModelArtifacts).toBe(`s3://${BUCKET}/training-output/walk-1/output/model.tar.gz`);

    const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: "training-output/walk-1/output/model.tar.gz" }));
    const entries = untar(gunzipSync(Buffer.from(await object.Body!.transformToByteArray())));
    expect(entries.map((e) => e.name)).toEqual(["model.safetensors"]);
    const st = entries[0]!.content;
    const headerLength = Number(st.readBigUInt64LE(0));
    const header = JSON.parse(st.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { data_offsets?: number[] } & Record<string, string>>;
    expect(header.__metadata__).toMatchObject({ emulated: "true", training_job: "walk-1" });
    expect(st.length).toBe(8 + headerLength + header["emulated.placeholder"]!.data_offsets![1]!);
  });

  it("stops a job mid-training: Stopping → Stopped, and refuses a second stop", async () => {
    await sm.send(new CreateTrainingJobCommand(jobInput("stop-1")));
    await waitFor(sm, "stop-1", (d) => d.SecondaryStatus === "Training", "Training");
    await sm.send(new StopTrainingJobCommand({ TrainingJobName: "stop-1" }));
    const stopping = await describeJob(sm, "stop-1");
    expect(stopping).toMatchObject({ TrainingJobStatus: "Stopping", SecondaryStatus: "Stopping" });
    const again = await refusal(sm.send(new StopTrainingJobCommand({ TrainingJobName: "stop-1" })));
    expect(again).toEqual({ name: "ValidationException", status: 400, message: "The request was rejected because the training job is in status Stopping." });
    const { d } = await waitFor(sm, "stop-1", (x) => x.TrainingJobStatus === "Stopped", "Stopped");
    expect(d.SecondaryStatus).toBe("Stopped");
    expect(d.SecondaryStatusTransitions?.map((t) => t.Status)).toEqual(["Starting", "Downloading", "Training", "Stopping", "Stopped"]);
    expect(d.SecondaryStatusTransitions?.[2]?.EndTime?.getTime()).toBe(d.SecondaryStatusTransitions?.[3]?.StartTime?.getTime());
    expect(d.TrainingEndTime).toBeInstanceOf(Date);
    expect(d.ModelArtifacts?.S3ModelArtifacts).toBeUndefined();
    const stopped = await refusal(sm.send(new StopTrainingJobCommand({ TrainingJobName: "stop-1" })));
    expect(stopped.message).toBe("The request was rejected because the training job is in status Stopped.");
  });

  it("fails injected jobs (name match or emulator_fail hyperparameter) with an AlgorithmError once Training started", async () => {
    await sm.send(new CreateTrainingJobCommand(jobInput("will-explode-1")));
    await sm.send(new CreateTrainingJobCommand(jobInput("hp-fail-1", { HyperParameters: { emulator_fail: "true" } })));
    const results = await Promise.all(["will-explode-1", "hp-fail-1"].map((name) => waitFor(sm, name, (x) => x.TrainingJobStatus === "Failed", "Failed")));
    for (const { d, seen } of results) {
      expect(seen).toContain("Training");
      expect(d.SecondaryStatus).toBe("Failed");
      expect(d.FailureReason).toMatch(/^AlgorithmError: /);
      expect(d.SecondaryStatusTransitions?.map((t) => t.Status)).toEqual(["Starting", "Downloading", "Training", "Failed"]);
      expect(d.ModelArtifacts?.S3ModelArtifacts).toBeUndefined();
    }
  });

  it("lists training jobs by creation time with NameContains, StatusEquals and paging", async () => {
    const all = await sm.send(new ListTrainingJobsCommand({ NameContains: "-1", MaxResults: 100 }));
    const names = all.TrainingJobSummaries?.map((s) => s.TrainingJobName) ?? [];
    expect(names.slice(0, 3)).toEqual(["hp-fail-1", "will-explode-1", "stop-1"]);
    const times = all.TrainingJobSummaries?.map((s) => s.CreationTime!.getTime()) ?? [];
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    const failed = await sm.send(new ListTrainingJobsCommand({ StatusEquals: "Failed" }));
    expect(failed.TrainingJobSummaries?.map((s) => s.TrainingJobName).sort()).toEqual(["hp-fail-1", "will-explode-1"]);
    expect(failed.TrainingJobSummaries?.[0]).toMatchObject({ TrainingJobStatus: "Failed", SecondaryStatus: "Failed" });
    const page1 = await sm.send(new ListTrainingJobsCommand({ MaxResults: 2, SortOrder: "Ascending" }));
    expect(page1.TrainingJobSummaries?.map((s) => s.TrainingJobName)).toEqual(["dup-1", "walk-1"]);
    const page2 = await sm.send(new ListTrainingJobsCommand({ MaxResults: 2, SortOrder: "Ascending", NextToken: page1.NextToken }));
    expect(page2.TrainingJobSummaries?.map((s) => s.TrainingJobName)).toEqual(["stop-1", "will-explode-1"]);
  });
});

describe("training jobs over time and restarts", () => {
  it("stops a job that exceeds MaxRuntimeInSeconds with SecondaryStatus MaxRuntimeExceeded", async () => {
    let skew = 0;
    const clocked = await startSageMakerEmulator({ settings: { ...TIMINGS, trainingTrainingMs: 60_000, trainingStoppingMs: 1000 }, now: () => Date.now() + skew });
    const client = new SageMakerClient({ region: "us-east-1", endpoint: clocked.url, credentials, maxAttempts: 1 });
    try {
      await client.send(new CreateTrainingJobCommand(jobInput("slow-1", { StoppingCondition: { MaxRuntimeInSeconds: 2 } })));
      skew = 1000;
      expect((await describeJob(client, "slow-1")).SecondaryStatus).toBe("Training");
      skew = 2200;
      expect(await describeJob(client, "slow-1")).toMatchObject({ TrainingJobStatus: "Stopping", SecondaryStatus: "Stopping" });
      skew = 5000;
      const d = await describeJob(client, "slow-1");
      expect(d).toMatchObject({ TrainingJobStatus: "Stopped", SecondaryStatus: "MaxRuntimeExceeded" });
      expect(d.SecondaryStatusTransitions?.map((t) => t.Status)).toEqual(["Starting", "Downloading", "Training", "Stopping", "MaxRuntimeExceeded"]);
      expect(d.SecondaryStatusTransitions?.[3]?.StartTime?.getTime()).toBe(d.TrainingStartTime!.getTime() + 2000);
    } finally {
      client.destroy();
      await clocked.stop();
    }
  });

  it("keeps jobs across a restart: a job in progress continues by its timestamps and completes with its artifact", async () => {
    const stateFile = path.join(dir, "restart-state.json");
    const settings: Partial<EmulatorSettings> = { ...TIMINGS, trainingTrainingMs: 600, stateFile, s3: { endpoint: s3server.endpoint, region: "us-east-1", credentials: s3server.credentials, forcePathStyle: true } };
    const before = await startSageMakerEmulator({ settings });
    const c1 = new SageMakerClient({ region: "us-east-1", endpoint: before.url, credentials, maxAttempts: 1 });
    await c1.send(new CreateTrainingJobCommand(jobInput("restart-1")));
    await waitFor(c1, "restart-1", (d) => d.SecondaryStatus === "Downloading" || d.SecondaryStatus === "Training", "Downloading");
    const created = (await describeJob(c1, "restart-1")).CreationTime;
    c1.destroy();
    await before.stop();

    // Started again with other timings: the job keeps the plan it was created with.
    const after = await startSageMakerEmulator({ settings: { ...settings, trainingTrainingMs: 60_000 } });
    const c2 = new SageMakerClient({ region: "us-east-1", endpoint: after.url, credentials, maxAttempts: 1 });
    try {
      const resumed = await describeJob(c2, "restart-1");
      expect(resumed.TrainingJobStatus).toBe("InProgress");
      expect(resumed.CreationTime).toEqual(created);
      const { d } = await waitFor(c2, "restart-1", (x) => x.TrainingJobStatus === "Completed", "Completed");
      expect(d.SecondaryStatusTransitions?.map((t) => t.Status)).toEqual(["Starting", "Downloading", "Training", "Uploading", "Completed"]);
      const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: "training-output/restart-1/output/model.tar.gz" }));
      expect(untar(gunzipSync(Buffer.from(await object.Body!.transformToByteArray()))).map((e) => e.name)).toEqual(["model.safetensors"]);
    } finally {
      c2.destroy();
      await after.stop();
    }
  });
});
