import { DescribeTrainingJobCommand, ListTrainingJobsCommand } from "@aws-sdk/client-sagemaker";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnWorker, type DiffgateProcess } from "../helpers/child-process.js";
import { rest, startTestStack, type TestStack } from "../helpers/test-stack.js";
import { until } from "../helpers/until.js";

let stack: TestStack;
let modelId: string;
const workers: DiffgateProcess[] = [];
const UTILS = "esd-async-utils";
const BUCKET = "diffgate-test";

beforeAll(async () => {
  // The API runs here without a worker; workers are separate processes that the test kills.
  // CreateTrainingJob is held 1.5 s before SageMaker takes it: a worker killed meanwhile loses the
  // answer, but the job is created (the call went through).
  stack = await startTestStack({
    env: { MODEL_UTILITY_ENDPOINT: UTILS, TRAINING_WATCH_INITIAL_MS: "100", MODEL_WATCH_INITIAL_MS: "50" },
    emulator: { operationDelaysMs: { CreateTrainingJob: 1500 }, trainingStartingMs: 300, trainingDownloadingMs: 200, trainingTrainingMs: 4000, trainingUploadingMs: 200 },
  });
}, 60_000);
afterAll(async () => {
  for (const w of workers) await w.stop("SIGKILL");
  await stack?.close();
});

const worker = () => spawnWorker(stack, workers);

const key = () => stack.adminKey;
const row = async (id: string) => ((await stack.runtime.db.query(`SELECT status, job_created AS "jobCreated", sagemaker_job_name AS "jobName" FROM trainings WHERE id = $1`, [id])) as Array<{ status: string; jobCreated: boolean; jobName: string }>)[0]!;

async function sagemakerJobsNamed(name: string): Promise<number> {
  const out = await stack.runtime.sagemaker.control.send(new ListTrainingJobsCommand({ NameContains: name, MaxResults: 100 }));
  return (out.TrainingJobSummaries ?? []).filter((s) => s.TrainingJobName === name).length;
}

async function newTraining(): Promise<string> {
  const res = await rest(stack.baseUrl, "POST", "/trainings", { key: key(), body: { train_type: "Lora", model_id: modelId, params: { training_params: { data_tar_list: [`s3://${BUCKET}/dataset/crashset`] } } } });
  expect(res.status).toBe(201);
  return res.body.data.job.id as string;
}

async function completesOnce(id: string) {
  const done = await until("the training to end", async () => {
    const r = await rest(stack.baseUrl, "GET", `/trainings/${id}`, { key: key() });
    return ["Complete", "Fail", "Stopped"].includes(r.body.data?.job_status) ? r : undefined;
  }, 90_000);
  expect(done.body.data).toMatchObject({ job_status: "Complete", error: null });
  const { jobName } = await row(id);
  expect(await sagemakerJobsNamed(jobName)).toBe(1);
  const events = await stack.runtime.events.readAfter(id, 0);
  const secondary = events.filter((e) => e.type === "secondary-status").map((e) => e.data.status);
  expect(secondary).toEqual(["Starting", "Downloading", "Training", "Uploading", "Completed"]);
  expect(events.filter((e) => e.type === "started")).toHaveLength(1);
  expect(events.filter((e) => e.terminal).map((e) => e.type)).toEqual(["completed"]);
  const ckpt = await stack.runtime.db.query(`SELECT count(*)::int AS n FROM checkpoints WHERE id = $1 AND status = 'Active'`, [done.body.data.checkpoint_id]);
  expect(ckpt[0].n).toBe(1);
}

/** Starts a new training and kills the worker while its CreateTrainingJob is held by SageMaker (the call goes through later). */
async function startAndKillDuringCreate(): Promise<{ id: string; jobName: string }> {
  const id = await newTraining();
  expect((await rest(stack.baseUrl, "PUT", `/trainings/${id}/start`, { key: key() })).status).toBe(202);
  const { jobName } = await row(id);
  await until("CreateTrainingJob to be sent", () => (stack.emulator.calls("CreateTrainingJob").some((c) => c.body.TrainingJobName === jobName) ? true : undefined));
  await workers.at(-1)!.stop("SIGKILL");
  return { id, jobName };
}

describe("a worker killed during a training", () => {
  beforeAll(async () => {
    worker();
    const ep = await rest(stack.baseUrl, "POST", "/endpoints", { key: key(), body: { endpoint_name: "utils", instance_type: "ml.g5.xlarge", initial_instance_count: 1, autoscaling_enabled: false } });
    expect(ep.status).toBe(202);
    await until("InService", async () => {
      const r = await rest(stack.baseUrl, "GET", "/endpoints", { key: key() });
      return r.body.data.endpoints.some((e: any) => e.endpoint_name === UTILS && e.endpoint_status === "InService") ? true : undefined;
    });
    const ds = await rest(stack.baseUrl, "POST", "/datasets", { key: key(), body: { dataset_name: "crashset", content: [{ filename: "a.png", type: "image", params: {} }] } });
    await fetch(ds.body.data.s3PresignUrl["a.png"], { method: "PUT", body: Buffer.from("png") });
    expect((await rest(stack.baseUrl, "PUT", "/datasets/crashset", { key: key(), body: { status: "Enabled" } })).status).toBe(200);
    const c = await rest(stack.baseUrl, "POST", "/checkpoints", { key: key(), body: { checkpoint_type: "Stable-diffusion", filenames: [{ filename: "crash-base.safetensors", parts_number: 1 }] } });
    const put = await fetch(c.body.data.s3PresignUrl["crash-base.safetensors"][0], { method: "PUT", body: Buffer.from("w") });
    await rest(stack.baseUrl, "PUT", `/checkpoints/${c.body.data.checkpoint.id}`, { key: key(), body: { status: "Active", multi_parts_tags: { "crash-base.safetensors": [put.headers.get("etag")!] } } });
    const m = await rest(stack.baseUrl, "POST", "/models", { key: key(), body: { model_type: "Stable-diffusion", name: "crashmodel", checkpoint_id: c.body.data.checkpoint.id, params: {} } });
    modelId = m.body.data.job.id;
    await rest(stack.baseUrl, "PUT", `/models/${modelId}`, { key: key(), body: { status: "Creating" } });
    await until("the model", async () => ((await rest(stack.baseUrl, "GET", `/models/${modelId}`, { key: key() })).body.data.status === "Complete" ? true : undefined));
  }, 90_000);

  it("while CreateTrainingJob is in flight: the next worker finds the job already there and creates no second one", async () => {
    const { id, jobName } = await startAndKillDuringCreate();
    expect(await row(id)).toMatchObject({ status: "Starting", jobCreated: false });
    await new Promise((r) => setTimeout(r, 1800));
    expect(await sagemakerJobsNamed(jobName)).toBe(1);
    worker();
    await completesOnce(id);
  }, 120_000);

  it("while SageMaker trains: the next worker resumes tracking without a second CreateTrainingJob", async () => {
    const id = await newTraining();
    expect((await rest(stack.baseUrl, "PUT", `/trainings/${id}/start`, { key: key() })).status).toBe(202);
    await until("Training", async () => ((await rest(stack.baseUrl, "GET", `/trainings/${id}`, { key: key() })).body.data.secondary_status === "Training" ? true : undefined));
    await workers.at(-1)!.stop("SIGKILL");
    const { jobName } = await row(id);
    worker();
    await completesOnce(id);
    expect(stack.emulator.calls("CreateTrainingJob").filter((c) => c.body.TrainingJobName === jobName)).toHaveLength(1);
  }, 120_000);

  it("stopped while a dead worker's CreateTrainingJob went through: the job is found and stopped, not left running", async () => {
    const { id, jobName } = await startAndKillDuringCreate();
    // Stop while the row still says nothing was created: only the flag can be set.
    expect((await rest(stack.baseUrl, "PUT", `/trainings/${id}/stop`, { key: key() })).body.data.job.status).toBe("Starting");
    await until("the lost call to land", async () => ((await sagemakerJobsNamed(jobName)) === 1 ? true : undefined));
    // The next pass of the run job (here in-process: no worker is left).
    for (let pass = 0; pass < 200; pass++) {
      const { recheckInMs } = await stack.runtime.trainings.run(id);
      if (recheckInMs === undefined) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await row(id)).status).toBe("Stopped");
    expect(stack.emulator.calls("StopTrainingJob").filter((c) => c.body.TrainingJobName === jobName)).toHaveLength(1);
    const described = await stack.runtime.sagemaker.control.send(new DescribeTrainingJobCommand({ TrainingJobName: jobName }));
    expect(described.TrainingJobStatus).toBe("Stopped");
  }, 120_000);

  it("stopped before a dead worker's CreateTrainingJob lands: the stop waits for it, then stops the job it finds", async () => {
    await worker().waitFor(/worker: \d+ concurrent jobs/);
    const { id, jobName } = await startAndKillDuringCreate();
    expect((await rest(stack.baseUrl, "PUT", `/trainings/${id}/stop`, { key: key() })).body.data.job.status).toBe("Starting");
    // Passes of the run job while the lost call is still held (1.5 s): SageMaker has no job yet.
    expect(await sagemakerJobsNamed(jobName)).toBe(0);
    const first = await stack.runtime.trainings.run(id);
    expect(first.recheckInMs).toBeGreaterThan(0);
    expect((await row(id)).status).toBe("Starting");
    for (let pass = 0; pass < 400; pass++) {
      const { recheckInMs } = await stack.runtime.trainings.run(id);
      if (recheckInMs === undefined || (await row(id)).status === "Stopped") break;
      await new Promise((r) => setTimeout(r, 25));
    }
    expect((await row(id)).status).toBe("Stopped");
    expect(stack.emulator.calls("StopTrainingJob").filter((c) => c.body.TrainingJobName === jobName)).toHaveLength(1);
    const described = await stack.runtime.sagemaker.control.send(new DescribeTrainingJobCommand({ TrainingJobName: jobName }));
    expect(["Stopping", "Stopped"]).toContain(described.TrainingJobStatus);
  }, 120_000);
});
