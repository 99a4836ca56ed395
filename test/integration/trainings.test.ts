import { gunzipSync } from "node:zlib";
import { createClient } from "graphql-ws";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";
import { untilRead } from "../helpers/until.js";
import { collectEvents } from "../helpers/subscription.js";

let stack: TestStack;
let base: string;
let admin: string;
let bob: string;
let carol: string;
const UTILS = "esd-async-utils";
const BUCKET = "diffgate-test";

async function apiKey(username: string): Promise<string> {
  return (await gql(base, `mutation($u: String!) { createApiKey(input: { name: $u, username: $u }) { apiKey } }`, { u: username }, { key: admin })).body.data.createApiKey.apiKey;
}

async function activeCheckpoint(key: string, type: string, name: string): Promise<string> {
  const created = await rest(base, "POST", "/checkpoints", { key, body: { checkpoint_type: type, filenames: [{ filename: name, parts_number: 1 }] } });
  expect(created.status).toBe(201);
  const put = await fetch(created.body.data.s3PresignUrl[name][0], { method: "PUT", body: Buffer.from(`weights of ${name}`) });
  const done = await rest(base, "PUT", `/checkpoints/${created.body.data.checkpoint.id}`, { key, body: { status: "Active", multi_parts_tags: { [name]: [put.headers.get("etag")!] } } });
  expect(done.status).toBe(200);
  return created.body.data.checkpoint.id as string;
}

async function enabledDataset(key: string, name: string): Promise<void> {
  const content = [
    { filename: "cat1.png", name: "cat1.png", type: "image", params: {} },
    { filename: "cat1.txt", name: "cat1.txt", type: "text", params: {} },
  ];
  const created = await rest(base, "POST", "/datasets", { key, body: { dataset_name: name, content } });
  expect(created.status).toBe(201);
  for (const c of content) expect((await fetch(created.body.data.s3PresignUrl[c.filename], { method: "PUT", body: Buffer.from(`bytes of ${c.filename}`) })).status).toBe(200);
  expect((await rest(base, "PUT", `/datasets/${name}`, { key, body: { status: "Enabled" } })).status).toBe(200);
}

/** A Complete model made from a checkpoint through the utility endpoint (REST, as the WebUI extension does). */
async function completeModel(key: string, name: string, checkpointId: string): Promise<string> {
  const created = await rest(base, "POST", "/models", {
    key,
    body: { model_type: "Stable-diffusion", name, filenames: [], checkpoint_id: checkpointId, params: { create_model_params: { new_model_name: name, from_hub: false, extract_ema: false, train_unfrozen: false, is_512: true } } },
  });
  expect(created.status).toBe(201);
  expect(created.body.data.job).toMatchObject({ status: "Initial", model_type: "Stable-diffusion", s3_base: `s3://${BUCKET}/Stable-diffusion/checkpoint/custom/${checkpointId}` });
  const id = created.body.data.job.id as string;
  const started = await rest(base, "PUT", `/models/${id}`, { key, body: { status: "Creating", multi_parts_tags: {} } });
  expect(started.status).toBe(200);
  expect(started.body.data.job).toMatchObject({ id, jobStatus: "Creating", endpointName: UTILS, jobType: "Stable-diffusion" });
  const done = await untilRead(() => rest(base, "GET", `/models/${id}`, { key }), (r) => ["Complete", "Fail"].includes(r.body.data?.status), `model ${name}`);
  expect(done.body.data).toMatchObject({ status: "Complete", output_s3_location: expect.stringMatching(new RegExp(`^s3://${BUCKET}/Stable-diffusion/model/${name}/${id}/output$`)), error: null });
  expect(done.body.data.output_files).toEqual([`Stable-diffusion/model/${name}/${id}/output/${name}.tar`]);
  expect(done.body.data.result.config_dict).toMatchObject({ model_name: name });
  return id;
}

type Ev = { seq: number; type: string; data: Record<string, any>; terminal: boolean };

/** Follows trainingEvents over graphql-ws until the terminal event. */
function followTraining(key: string, id: string): Promise<Ev[]> {
  return collectEvents<Ev>({ wsUrl: stack.wsUrl, key, query: `subscription($id: ID!) { trainingEvents(id: $id, after: 0) { seq type data terminal } }`, variables: { id }, field: "trainingEvents", timeoutMs: 120_000 }).events;
}

const trainingBody = (modelId: string, extra: Record<string, unknown> = {}) => ({
  train_type: "Stable-diffusion",
  model_id: modelId,
  params: {
    training_params: { data_tar_list: [`s3://${BUCKET}/dataset/cats`], class_data_tar_list: [""], training_instance_type: "ml.g5.2xlarge" },
    config_params: { concepts_list: [{ instance_prompt: "hanportraittest123", instance_data_dir: `s3://${BUCKET}/dataset/cats` }], model_name: "catmodel", num_train_epochs: 2, use_lora: true, revision: "" },
  },
  ...extra,
});

let baseCheckpoint: string;
let catModel: string;

beforeAll(async () => {
  stack = await startTestStack({
    worker: true,
    env: { MODEL_UTILITY_ENDPOINT: UTILS, TRAINING_WATCH_INITIAL_MS: "50", MODEL_WATCH_INITIAL_MS: "50" },
    emulator: { trainingStartingMs: 300, trainingDownloadingMs: 200, trainingTrainingMs: 600, trainingUploadingMs: 200, trainingStoppingMs: 200, failTrainingJobsMatching: ["doomed"] },
  });
  base = stack.baseUrl;
  admin = stack.adminKey;
  await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Trainer", permissions: ["train:create", "checkpoint:create", "inference:create"] } });
  await rest(base, "POST", "/roles", { key: admin, body: { role_name: "Outsider", permissions: ["train:create", "checkpoint:create"] } });
  await rest(base, "POST", "/users", { key: admin, body: { username: "bob", password: "correct horse battery", roles: ["Trainer"] } });
  await rest(base, "POST", "/users", { key: admin, body: { username: "carol", password: "correct horse battery", roles: ["Outsider"] } });
  bob = await apiKey("bob");
  carol = await apiKey("carol");
  const ep = await rest(base, "POST", "/endpoints", { key: admin, body: { endpoint_name: "utils", instance_type: "ml.g5.xlarge", initial_instance_count: 1, autoscaling_enabled: false, assign_to_roles: ["IT Operator", "Trainer"] } });
  expect(ep.body.data.endpoint_name).toBe(UTILS);
  await untilRead(() => rest(base, "GET", "/endpoints", { key: admin }), (r) => r.body.data.endpoints.some((e: any) => e.endpoint_name === UTILS && e.endpoint_status === "InService"), "utils InService");
  baseCheckpoint = await activeCheckpoint(bob, "Stable-diffusion", "bob-base.safetensors");
  await enabledDataset(bob, "cats");
  catModel = await completeModel(bob, "catmodel", baseCheckpoint);
}, 90_000);
afterAll(async () => stack?.close());

describe("dataset → model → training → checkpoint → inference", () => {
  it("trains a LoRA followed over graphql-ws, registers the artifact as the caller's checkpoint, and infers with it", async () => {
    const created = await rest(base, "POST", "/trainings", { key: bob, body: trainingBody(catModel) });
    expect(created.status).toBe(201);
    const job = created.body.data.job;
    expect(job).toMatchObject({ status: "Initial", trainType: "Lora", input_location: `s3://${BUCKET}/Lora/train/catmodel/${job.id}/input` });
    expect(created.body.data.s3PresignUrl).toBeNull();
    expect(job.params.training_params).toMatchObject({ data_tar_list: [`s3://${BUCKET}/dataset/cats`], class_data_tar_list: [], model_name: "catmodel", training_instance_type: "ml.g5.2xlarge" });

    const events = followTraining(bob, job.id);
    const started = await rest(base, "PUT", `/trainings/${job.id}/start`, { key: bob, body: { status: "Training" } });
    expect(started.status).toBe(202);
    // Starting again (the seed's alias too) changes nothing and creates no second SageMaker job.
    expect((await rest(base, "PUT", `/trainings/${job.id}/start`, { key: bob })).status).toBe(202);
    expect((await rest(base, "PUT", `/trainings/${job.id}`, { key: bob, body: { train_job_id: job.id, status: "Training" } })).status).toBe(200);

    const seen = await events;
    expect(seen.map((e) => e.seq)).toEqual(seen.map((_, i) => i + 1));
    expect(seen.filter((e) => e.terminal)).toHaveLength(1);
    expect(seen.at(-1)).toMatchObject({ type: "completed", terminal: true, data: { status: "Complete" } });
    const secondary = seen.filter((e) => e.type === "secondary-status").map((e) => e.data.status);
    expect(secondary).toEqual(["Starting", "Downloading", "Training", "Uploading", "Completed"]);
    // The emulator reports epoch/step/loss while training; each change is an event.
    const metrics = seen.filter((e) => e.type === "metrics").map((e) => e.data);
    expect(metrics.length).toBeGreaterThan(0);
    expect(metrics.at(-1)).toMatchObject({ epoch: expect.any(Number), step: expect.any(Number), loss: expect.any(Number) });
    const types = seen.map((e) => e.type);
    expect(types.slice(0, 3)).toEqual(["status", "starting", "started"]);
    expect(types.indexOf("started")).toBeLessThan(types.indexOf("secondary-status"));

    const creates = stack.emulator.calls("CreateTrainingJob").filter((c) => String(c.body.TrainingJobName).endsWith(job.id.replace(/-/g, "")));
    expect(creates).toHaveLength(1);
    const request = creates[0]!.body as any;
    expect(request.TrainingJobName).toBe(`catmodel-${job.id.replace(/-/g, "")}`);
    expect(request.ResourceConfig).toMatchObject({ InstanceType: "ml.g5.2xlarge", InstanceCount: 1 });
    expect(request.OutputDataConfig.S3OutputPath).toBe(`s3://${BUCKET}/Lora/train/catmodel/${job.id}/output`);
    expect(request.InputDataConfig.map((c: any) => [c.ChannelName, c.DataSource.S3DataSource.S3Uri])).toEqual([
      ["model", `s3://${BUCKET}/Stable-diffusion/model/catmodel/${catModel}/output/`],
      ["dataset-0", `s3://${BUCKET}/dataset/cats/`],
    ]);
    // Upstream's hyperparameters, base64(JSON) outside China.
    expect(JSON.parse(Buffer.from(request.HyperParameters["s3-output-path"], "base64").toString())).toBe(`s3://${BUCKET}/Lora/train/catmodel/${job.id}/output`);
    expect(JSON.parse(Buffer.from(request.HyperParameters.params, "base64").toString()).config_params.use_lora).toBe(true);

    const detail = await rest(base, "GET", `/trainings/${job.id}`, { key: bob });
    expect(detail.status).toBe(200);
    expect(detail.body.data).toMatchObject({ job_status: "Complete", secondary_status: "Completed", model_id: catModel, train_type: "Lora", error: null });
    const checkpointId = detail.body.data.checkpoint_id as string;
    const list = await rest(base, "GET", "/checkpoints?types=Lora&status=Active", { key: bob });
    const ckpt = list.body.data.checkpoints.find((c: any) => c.id === checkpointId);
    const loraName = `catmodel-${job.id.slice(0, 8)}.safetensors`;
    expect(ckpt).toMatchObject({ type: "Lora", status: "Active", name: [loraName] });
    // The stored file is the safetensors from inside model.tar.gz.
    const stored = await stack.runtime.storage.getBytes(`Lora/checkpoint/custom/${checkpointId}/${loraName}`, 1_000_000);
    const artifact = await stack.runtime.storage.getBytes(`Lora/train/catmodel/${job.id}/output/${request.TrainingJobName}/output/model.tar.gz`, 1_000_000);
    expect(stored!.length).toBeGreaterThan(8);
    expect(gunzipSync(artifact!).includes(stored!)).toBe(true);
    expect(stored!.toString("latin1")).toContain("emulated");

    // The new LoRA is usable by its owner in an inference.
    const inf = await rest(base, "POST", "/inferences", {
      key: bob,
      body: { sagemaker_endpoint_name: UTILS, task_type: "txt2img", prompt: "a cat <lora:catmodel:1>", steps: 3, width: 64, height: 64, models: { "Stable-diffusion": ["bob-base.safetensors"], Lora: [loraName] } },
    });
    expect(inf.status).toBe(202);
    const done = await untilRead(() => rest(base, "GET", `/inferences/${inf.body.data.inference_id}`, { key: bob }), (r) => ["succeed", "failed"].includes(r.body.data?.status), "inference");
    expect(done.body.data.status).toBe("succeed");
    expect(done.body.data.params.used_models.Lora[0]).toMatchObject({ id: checkpointId, model_name: loraName });

    // Listing, with upstream's filters; carol sees none of bob's.
    const trainJobs = (await rest(base, "GET", "/trainings?types=Lora&status=Complete", { key: bob })).body.data.trainJobs;
    expect(trainJobs.map((t: any) => t.id)).toContain(job.id);
    expect(trainJobs.find((t: any) => t.id === job.id)).toMatchObject({ modelName: "catmodel", sagemakerTrainName: request.TrainingJobName, status: "Complete" });
    expect((await rest(base, "GET", "/trainings", { key: carol })).body.data.trainJobs).toEqual([]);
    expect((await rest(base, "GET", `/trainings/${job.id}`, { key: carol })).status).toBe(404);

    // Delete removes the training's own objects, never the model's or the produced checkpoint.
    expect((await rest(base, "DELETE", "/trainings", { key: carol, body: { training_id_list: [job.id] } })).status).toBe(404);
    expect((await rest(base, "DELETE", "/trainings", { key: bob, body: { training_id_list: [job.id] } })).status).toBe(204);
    expect(await stack.runtime.storage.listObjects(`Lora/train/catmodel/${job.id}/`)).toEqual([]);
    expect((await stack.runtime.storage.listObjects(`Stable-diffusion/model/catmodel/${catModel}/`)).length).toBeGreaterThan(0);
    expect(await stack.runtime.storage.head(`Lora/checkpoint/custom/${checkpointId}/${loraName}`)).toBeDefined();
    expect((await rest(base, "GET", `/trainings/${job.id}`, { key: bob })).status).toBe(404);
  }, 60_000);

  it("stops a running training with StopTrainingJob (SageMaker Stopping → Stopped)", async () => {
    const body = trainingBody(catModel);
    (body.params.training_params as Record<string, unknown>).use_spot = true;
    const created = await rest(base, "POST", "/trainings", { key: bob, body });
    const id = created.body.data.job.id as string;
    expect(created.body.data.job.training.spot).toBe(true);
    expect((await rest(base, "PUT", `/trainings/${id}/start`, { key: bob })).status).toBe(202);
    const request = (await untilRead(async () => stack.emulator.calls("CreateTrainingJob").find((c) => String(c.body.TrainingJobName).endsWith(id.replace(/-/g, ""))), (c) => c !== undefined, "CreateTrainingJob"))!.body as any;
    expect(request).toMatchObject({ EnableManagedSpotTraining: true, CheckpointConfig: { S3Uri: `s3://${BUCKET}/Lora/train/catmodel/${id}/spot-checkpoints` }, StoppingCondition: { MaxRuntimeInSeconds: 86400, MaxWaitTimeInSeconds: 172800 } });
    await untilRead(() => rest(base, "GET", `/trainings/${id}`, { key: bob }), (r) => r.body.data.secondary_status === "Training", "Training");
    const stopped = await rest(base, "PUT", `/trainings/${id}/stop`, { key: bob });
    expect(stopped.status).toBe(200);
    expect(stopped.body.data.job.status).toBe("Stopping");
    const done = await untilRead(() => rest(base, "GET", `/trainings/${id}`, { key: bob }), (r) => r.body.data.job_status === "Stopped", "Stopped");
    expect(done.body.data).toMatchObject({ secondary_status: "Stopped", checkpoint_id: null });
    expect(stack.emulator.calls("StopTrainingJob").filter((c) => String(c.body.TrainingJobName).endsWith(id.replace(/-/g, "")))).toHaveLength(1);
    const events = await stack.runtime.events.readAfter(id, 0);
    expect(events.filter((e) => e.type === "secondary-status").map((e) => e.data.status).slice(-2)).toEqual(["Stopping", "Stopped"]);
    expect(events.at(-1)).toMatchObject({ type: "stopped", terminal: true });
    // Stopping again is harmless.
    expect((await rest(base, "PUT", `/trainings/${id}/stop`, { key: bob })).body.data.job.status).toBe("Stopped");
  }, 30_000);

  it("keeps SageMaker's FailureReason of a failed training (GraphQL model creation and training)", async () => {
    const made = await gql(base, `mutation($c: ID!) { createModel(input: { name: "doomed", checkpointId: $c }) { model { id status } uploads { fileName } } }`, { c: baseCheckpoint }, { key: bob });
    expect(made.body.errors).toBeUndefined();
    const modelId = made.body.data.createModel.model.id;
    expect((await gql(base, `mutation($id: ID!) { startModelCreation(id: $id) { status endpointName } }`, { id: modelId }, { key: bob })).body.data.startModelCreation).toEqual({ status: "Creating", endpointName: UTILS });
    await untilRead(() => gql(base, `query($id: ID!) { model(id: $id) { status } }`, { id: modelId }, { key: bob }), (r) => r.body.data?.model.status === "Complete", "doomed model");
    const t = await gql(base, `mutation($m: ID!) { createTraining(input: { trainType: "Lora", modelId: $m, datasets: ["cats"], instanceType: "ml.g4dn.xlarge" }) { training { id status trainType } uploads { url } } }`, { m: modelId }, { key: bob });
    expect(t.body.errors).toBeUndefined();
    const id = t.body.data.createTraining.training.id;
    const events = followTraining(bob, id);
    expect((await gql(base, `mutation($id: ID!) { startTraining(id: $id) { status } }`, { id }, { key: bob })).body.data.startTraining.status).toBe("Starting");
    const seen = await events;
    expect(seen.at(-1)).toMatchObject({ type: "failed", terminal: true });
    expect(seen.at(-1)!.data.reason).toMatch(/^AlgorithmError: .*emulated training failure/s);
    const final = await gql(base, `query($id: ID!) { training(id: $id) { status secondaryStatus failureReason checkpointId } }`, { id }, { key: bob });
    expect(final.body.data.training).toMatchObject({ status: "Fail", secondaryStatus: "Failed", checkpointId: null });
    expect(final.body.data.training.failureReason).toMatch(/AlgorithmError/);
  }, 30_000);
});

describe("model creation with an upload", () => {
  it("takes the checkpoint's parts, completes them on PUT /models/{id} and creates the model", async () => {
    const created = await rest(base, "POST", "/models", { key: bob, body: { model_type: "Stable-diffusion", name: "uploaded", filenames: [{ filename: "uploaded-src.safetensors", parts_number: 1 }], params: { create_model_params: { new_model_name: "uploaded" } } } });
    expect(created.status).toBe(201);
    const job = created.body.data.job;
    expect(job.s3PresignUrl).toEqual([{ upload_id: expect.any(String), bucket: BUCKET, key: `Stable-diffusion/checkpoint/custom/${job.checkpoint_id}/uploaded-src.safetensors` }]);
    const put = await fetch(created.body.data.s3PresignUrl["uploaded-src.safetensors"][0], { method: "PUT", body: Buffer.from("source weights") });
    const noTags = await rest(base, "PUT", `/models/${job.id}`, { key: bob, body: { status: "Creating" } });
    expect(noTags.status).toBe(400);
    expect(noTags.body.message).toMatch(/multi parts tags is empty/);
    const started = await rest(base, "PUT", `/models/${job.id}`, { key: bob, body: { model_id: job.id, status: "Creating", multi_parts_tags: { "uploaded-src.safetensors": [{ ETag: put.headers.get("etag"), PartNumber: 1 }] } } });
    expect(started.status).toBe(200);
    const done = await untilRead(() => rest(base, "GET", `/models/${job.id}`, { key: bob }), (r) => ["Complete", "Fail"].includes(r.body.data?.status), "uploaded model");
    expect(done.body.data.status).toBe("Complete");
    const ckpt = await rest(base, "GET", "/checkpoints?types=Stable-diffusion", { key: bob });
    expect(ckpt.body.data.checkpoints.find((c: any) => c.id === job.checkpoint_id)).toMatchObject({ status: "Active", name: ["uploaded-src.safetensors"] });
    // Deleting the model keeps its source checkpoint.
    expect((await rest(base, "DELETE", "/models", { key: bob, body: { model_id_list: [job.id] } })).status).toBe(204);
    expect(await stack.runtime.storage.listObjects(`Stable-diffusion/model/uploaded/${job.id}/`)).toEqual([]);
    expect((await rest(base, "GET", `/checkpoints?types=Stable-diffusion`, { key: bob })).body.data.checkpoints.some((c: any) => c.id === job.checkpoint_id)).toBe(true);
  });
});

describe("model creation after a crash mid-invoke", () => {
  it("never invokes again: it waits for the output under the model's own prefix, then completes from it", async () => {
    const created = await rest(base, "POST", "/models", { key: bob, body: { model_type: "Stable-diffusion", name: "crashed", checkpoint_id: baseCheckpoint, params: {} } });
    const id = created.body.data.job.id as string;
    // What a worker leaves behind when it dies between the marker and InvokeEndpointAsync's answer.
    await stack.runtime.db.query(`UPDATE models SET status = 'Creating', endpoint_name = $2, invoke_attempted_at = now() WHERE id = $1`, [id, UTILS]);
    await stack.runtime.events.append(id, { type: "creating", data: { status: "Creating" } });
    const first = await stack.runtime.models.runCreate(id);
    expect(first.recheckInMs).toBeGreaterThan(0);
    expect(stack.emulator.invocations.list().filter((i) => i.inferenceId === id)).toHaveLength(0);
    // The lost invocation went through after all: its output appears.
    await stack.runtime.storage.putObject(`Stable-diffusion/model/crashed/${id}/output/crashed.tar`, Buffer.alloc(1024), "application/x-tar");
    expect(await stack.runtime.models.runCreate(id)).toEqual({});
    const m = (await rest(base, "GET", `/models/${id}`, { key: bob })).body.data;
    expect(m).toMatchObject({ status: "Complete", output_files: [`Stable-diffusion/model/crashed/${id}/output/crashed.tar`] });
    expect(stack.emulator.invocations.list().filter((i) => i.inferenceId === id)).toHaveLength(0);
    // A finished creation is left alone by later passes and by the reconcile.
    await stack.runtime.models.resumeUnfinished();
    expect(await stack.runtime.models.runCreate(id)).toEqual({});
  });
});

describe("refusals (4xx, naming the field)", () => {
  it("refuses instance types outside the list, models not Complete or not the caller's, foreign datasets and traversal in file names", async () => {
    const bad = await rest(base, "POST", "/trainings", { key: bob, body: trainingBody(catModel, {}) && { ...trainingBody(catModel), params: { training_params: { data_tar_list: [`s3://${BUCKET}/dataset/cats`], training_instance_type: "ml.p4d.24xlarge" } } } });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/^params\.training_params\.training_instance_type: ml\.p4d\.24xlarge is not allowed/);
    const gqlBad = await gql(base, `mutation($m: ID!) { createTraining(input: { trainType: "Lora", modelId: $m, datasets: ["cats"], instanceType: "ml.t3.medium" }) { training { id } } }`, { m: catModel }, { key: bob });
    expect(gqlBad.body.errors![0]!.extensions).toMatchObject({ code: "BAD_INPUT", field: "instanceType" });

    // A model still Initial.
    const initial = await rest(base, "POST", "/models", { key: bob, body: { model_type: "Stable-diffusion", name: "unfinished", filenames: [], checkpoint_id: baseCheckpoint, params: {} } });
    expect(initial.status).toBe(201);
    const notComplete = await rest(base, "POST", "/trainings", { key: bob, body: trainingBody(initial.body.data.job.id) });
    expect(notComplete.status).toBe(400);
    expect(notComplete.body.message).toMatch(/model_id: model .* is in Initial state, not valid to be used for train/);

    // Another user's model and dataset.
    expect((await rest(base, "POST", "/trainings", { key: carol, body: trainingBody(catModel) })).status).toBe(404);
    await enabledDataset(admin, "secret");
    const foreign = await rest(base, "POST", "/trainings", { key: bob, body: { ...trainingBody(catModel), params: { training_params: { data_tar_list: [`s3://${BUCKET}/dataset/secret`] } } } });
    expect(foreign.status).toBe(400);
    expect(foreign.body.message).toMatch(/^params\.training_params\.data_tar_list\.0: dataset secret is not found/);
    const otherBucket = await rest(base, "POST", "/trainings", { key: bob, body: { ...trainingBody(catModel), params: { training_params: { data_tar_list: ["s3://elsewhere/dataset/cats"] } } } });
    expect(otherBucket.status).toBe(400);

    // Traversal in file names: training inputs, model uploads, checkpoint sources.
    const traversal = await rest(base, "POST", "/trainings", { key: bob, body: { ...trainingBody(catModel), filenames: ["../../etc/passwd.tar"] } });
    expect(traversal.status).toBe(400);
    expect(traversal.body.message).toMatch(/^filenames\.0: must not contain path separators/);
    const modelUpload = await rest(base, "POST", "/models", { key: bob, body: { model_type: "Stable-diffusion", name: "sneaky", filenames: [{ filename: "../x.safetensors", parts_number: 1 }], params: {} } });
    expect(modelUpload.status).toBe(400);
    const ckptPath = await rest(base, "POST", "/models", { key: bob, body: { model_type: "Stable-diffusion", name: "sneaky", checkpoint_id: baseCheckpoint, params: { create_model_params: { ckpt_path: "../../other/secret.safetensors" } } } });
    expect(ckptPath.status).toBe(400);
    expect(ckptPath.body.message).toMatch(/ckpt_path: must be a file of the checkpoint/);
    const badName = await rest(base, "POST", "/models", { key: bob, body: { model_type: "Stable-diffusion", name: "../x", checkpoint_id: baseCheckpoint, params: {} } });
    expect(badName.status).toBe(400);
    expect(badName.body.message).toMatch(/^name: /);
    // Upload to a training: presigned URLs only under its own input prefix, and start waits for them.
    const withFiles = await rest(base, "POST", "/trainings", { key: bob, body: { ...trainingBody(catModel), filenames: ["data.tar"] } });
    expect(withFiles.status).toBe(201);
    expect(Object.keys(withFiles.body.data.s3PresignUrl)).toEqual(["data.tar"]);
    const early = await rest(base, "PUT", `/trainings/${withFiles.body.data.job.id}/start`, { key: bob });
    expect(early.status).toBe(409);
    expect(early.body.message).toMatch(/not uploaded yet: data\.tar/);
    expect((await rest(base, "PUT", `/models/${initial.body.data.job.id}`, { key: bob, body: { status: "Complete" } })).status).toBe(400);
    expect((await rest(base, "GET", "/models", { key: carol })).body.data.models).toEqual([]);
  }, 30_000);

  it("refuses merges of 1 or 4 checkpoints, bad ratios and methods", async () => {
    await activeCheckpoint(bob, "Stable-diffusion", "bob-alt.safetensors");
    const one = await rest(base, "POST", "/inference/run-model-merge", { key: bob, body: { primary_model_name: "bob-base.safetensors" } });
    expect(one.status).toBe(400);
    const four = await gql(base, `mutation { mergeCheckpoints(input: { checkpoints: ["a.safetensors", "b.safetensors", "c.safetensors", "d.safetensors"] }) { id } }`, {}, { key: bob });
    expect(four.body.errors![0]!.extensions).toMatchObject({ code: "BAD_INPUT", field: "checkpoints" });
    const single = await gql(base, `mutation { mergeCheckpoints(input: { checkpoints: ["bob-base.safetensors"] }) { id } }`, {}, { key: bob });
    expect(single.body.errors![0]!.extensions).toMatchObject({ code: "BAD_INPUT", field: "checkpoints" });
    const ratio = await rest(base, "POST", "/inference/run-model-merge", { key: bob, body: { primary_model_name: "bob-base.safetensors", secondary_model_name: "bob-alt.safetensors", interp_amount: 1.5 } });
    expect(ratio.status).toBe(400);
    expect(ratio.body.message).toMatch(/^interp_amount: /);
    const method = await rest(base, "POST", "/inference/run-model-merge", { key: bob, body: { primary_model_name: "bob-base.safetensors", secondary_model_name: "bob-alt.safetensors", interp_method: "Add difference" } });
    expect(method.status).toBe(400);
    expect(method.body.message).toMatch(/^interp_method: Add difference needs three/);
    const foreign = await rest(base, "POST", "/inference/run-model-merge", { key: carol, body: { primary_model_name: "bob-base.safetensors", secondary_model_name: "bob-alt.safetensors" } });
    expect(foreign.status).toBe(400);
  });
});

describe("merge", () => {
  it("merges two checkpoints on the endpoint into a new Active checkpoint of the caller", async () => {
    const res = await rest(base, "POST", "/inference/run-model-merge", { key: bob, body: { primary_model_name: "bob-base.safetensors", secondary_model_name: "bob-alt.safetensors", tertiary_model_name: "", interp_amount: 0.5, custom_name: "bobmix" } });
    expect(res.status).toBe(202);
    expect(res.body.data).toMatchObject({ primary_model_name: "bob-base.safetensors", secondary_model_name: "bob-alt.safetensors", tertiary_model_name: "" });
    const id = res.body.data.merge.id;
    const done = await untilRead(() => rest(base, "GET", `/inference/run-model-merge/${id}`, { key: bob }), (r) => ["Complete", "Fail"].includes(r.body.data?.merge.status), "merge");
    expect(done.body.data.merge).toMatchObject({ status: "Complete", interp_method: "Weighted sum", interp_amount: 0.5, result_name: "bobmix.safetensors", error: null });
    const ckpt = await rest(base, "GET", `/checkpoints?types=Stable-diffusion`, { key: bob });
    expect(ckpt.body.data.checkpoints.find((c: any) => c.id === done.body.data.merge.checkpoint_id)).toMatchObject({ status: "Active", name: ["bobmix.safetensors"] });
    const events = (await stack.runtime.events.readAfter(id, 0)).map((e) => e.type);
    expect(events).toEqual(["status", "merging", "completed"]);
    // The name is now taken.
    const again = await rest(base, "POST", "/inference/run-model-merge", { key: bob, body: { primary_model_name: "bob-base.safetensors", secondary_model_name: "bob-alt.safetensors", custom_name: "bobmix" } });
    expect(again.status).toBe(409);
  }, 30_000);
});

describe("hostile input and races (4xx naming the field, nothing half-written)", () => {
  /** JSON text nested `levels` deep (built as text: the client's own JSON.stringify would overflow too). */
  const deep = (levels: number) => `${"[".repeat(levels)}1${"]".repeat(levels)}`;

  it("refuses params nested thousands deep with a 400/BAD_INPUT, not a 500", async () => {
    const body = JSON.stringify(trainingBody(catModel)).replace('"revision":""', `"revision":"","nested":${deep(6000)}`);
    const r = await rest(base, "POST", "/trainings", { key: bob, rawBody: body });
    expect(r.status).toBe(400);
    expect(r.body.message).toMatch(/^params: must nest at most 32 levels/);
    const query = `mutation($m: ID!, $p: JSONObject) { createTraining(input: { trainType: "Lora", modelId: $m, datasets: ["cats"], params: $p }) { training { id } } }`;
    const g = await fetch(`${base}/graphql`, { method: "POST", headers: { "content-type": "application/json", "x-api-key": bob }, body: `{"query":${JSON.stringify(query)},"variables":{"m":"${catModel}","p":{"x":${deep(6000)}}}}` });
    expect(((await g.json()) as any).errors[0].extensions).toMatchObject({ code: "BAD_INPUT", field: "params" });
    const m = await rest(base, "POST", "/models", { key: bob, rawBody: `{"name":"deepmodel","checkpoint_id":"${baseCheckpoint}","params":{"x":${deep(6000)}}}` });
    expect(m.status).toBe(400);
    expect(m.body.message).toMatch(/^params: /);
    expect((await rest(base, "GET", "/models", { key: bob })).body.data.models.some((x: any) => x.model_name === "deepmodel")).toBe(false);
  });

  it("refuses a model's bad params before opening the source upload (no checkpoint left behind)", async () => {
    const count = async () => Number((await stack.runtime.db.query(`SELECT count(*)::int AS n FROM checkpoints`))[0].n);
    const before = await count();
    const r = await rest(base, "POST", "/models", { key: bob, body: { name: "leaky", filenames: [{ filename: "leaky-src.safetensors", parts_number: 1 }], params: { create_model_params: { ckpt_path: "other.safetensors" } } } });
    expect(r.status).toBe(400);
    expect(r.body.message).toMatch(/ckpt_path: must be a file of the checkpoint/);
    const badName = await gql(base, `mutation { createModel(input: { name: "leaky", files: [{ name: "leaky-src.safetensors", partsNumber: 1 }], params: { create_model_params: { new_model_name: "../x" } } }) { model { id } } }`, {}, { key: bob });
    expect(badName.body.errors![0]!.extensions).toMatchObject({ code: "BAD_INPUT", field: "params.create_model_params.new_model_name" });
    expect(await count()).toBe(before);
  });

  it("never answers with a credential given in params (kept for the container only)", async () => {
    const token = "hf_verysecrettoken123";
    const r = await rest(base, "POST", "/models", { key: bob, body: { name: "withtoken", checkpoint_id: baseCheckpoint, params: { create_model_params: { new_model_token: token } } } });
    expect(r.status).toBe(201);
    const id = r.body.data.job.id as string;
    expect(JSON.stringify(r.body)).not.toContain(token);
    expect(JSON.stringify((await rest(base, "GET", `/models/${id}`, { key: bob })).body)).not.toContain(token);
    expect(JSON.stringify((await rest(base, "GET", `/models`, { key: bob })).body)).not.toContain(token);
    const g = await gql(base, `query($id: ID!) { model(id: $id) { params } }`, { id }, { key: bob });
    expect(g.body.data.model.params.create_model_params.new_model_token).toBe("***");
    const stored = await stack.runtime.db.query(`SELECT params FROM models WHERE id = $1`, [id]);
    expect(stored[0].params.create_model_params.new_model_token).toBe(token);
    const t = await rest(base, "POST", "/trainings", { key: bob, body: { ...trainingBody(catModel), params: { ...trainingBody(catModel).params, config_params: { hub_token: token } } } });
    expect(t.status).toBe(201);
    expect(JSON.stringify(t.body)).not.toContain(token);
    expect(JSON.stringify((await rest(base, "GET", `/trainings/${t.body.data.job.id}`, { key: bob })).body)).not.toContain(token);
    expect((await rest(base, "DELETE", "/models", { key: bob, body: { model_id_list: [id] } })).status).toBe(204);
  });

  it("bounds list filters (a huge filter list is a 400, not one SQL parameter each)", async () => {
    const g = await gql(base, `query($s: [String!]) { trainings(filter: { statuses: $s }) { id } }`, { s: Array(100).fill("Initial") }, { key: bob });
    expect(g.body.errors![0]!.extensions).toMatchObject({ code: "BAD_INPUT", field: "statuses" });
    const m = await gql(base, `query($s: [String!]) { models(statuses: $s) { id } }`, { s: Array(100).fill("Complete") }, { key: bob });
    expect(m.body.errors![0]!.extensions).toMatchObject({ code: "BAD_INPUT", field: "statuses" });
  });

  it("keeps a model its running training reads, and a training whose model is gone does not start", async () => {
    const modelId = await completeModel(bob, "keptmodel", baseCheckpoint);
    const running = await rest(base, "POST", "/trainings", { key: bob, body: trainingBody(modelId) });
    const id = running.body.data.job.id as string;
    expect((await rest(base, "PUT", `/trainings/${id}/start`, { key: bob })).status).toBe(202);
    const refused = await rest(base, "DELETE", "/models", { key: bob, body: { model_id_list: [modelId] } });
    expect(refused.status).toBe(409);
    expect(refused.body.message).toMatch(/used by running training/);
    expect((await stack.runtime.storage.listObjects(`Stable-diffusion/model/keptmodel/${modelId}/`)).length).toBeGreaterThan(0);
    // Deleting the running training is refused too, its objects untouched.
    expect((await rest(base, "DELETE", "/trainings", { key: bob, body: { training_id_list: [id] } })).status).toBe(409);
    await untilRead(() => rest(base, "GET", `/trainings/${id}`, { key: bob }), (r) => ["Complete", "Fail", "Stopped"].includes(r.body.data?.job_status), "the training to end");

    const waiting = await rest(base, "POST", "/trainings", { key: bob, body: trainingBody(modelId) });
    const waitingId = waiting.body.data.job.id as string;
    expect((await rest(base, "DELETE", "/models", { key: bob, body: { model_id_list: [modelId] } })).status).toBe(204);
    const start = await rest(base, "PUT", `/trainings/${waitingId}/start`, { key: bob });
    expect(start.status).toBe(409);
    expect(start.body.message).toMatch(/model keptmodel was deleted/);
    expect((await rest(base, "GET", `/trainings/${waitingId}`, { key: bob })).body.data.job_status).toBe("Initial");
    expect(stack.emulator.calls("CreateTrainingJob").filter((c) => String(c.body.TrainingJobName).endsWith(waitingId.replace(/-/g, "")))).toHaveLength(0);
  }, 30_000);

  it("start, stop and delete sent together leave one consistent outcome", async () => {
    for (let round = 0; round < 3; round++) {
      const created = await rest(base, "POST", "/trainings", { key: bob, body: trainingBody(catModel) });
      const id = created.body.data.job.id as string;
      const [start, del] = await Promise.all([rest(base, "PUT", `/trainings/${id}/start`, { key: bob }), rest(base, "DELETE", "/trainings", { key: bob, body: { training_id_list: [id] } })]);
      expect([202, 404]).toContain(start.status);
      expect([204, 409]).toContain(del.status);
      const row = (await stack.runtime.db.query(`SELECT status FROM trainings WHERE id = $1`, [id]))[0] as { status: string } | undefined;
      // Either it was deleted before it started (and SageMaker never hears of it), or it runs and the delete was refused.
      if (del.status === 204) expect(row).toBeUndefined();
      else expect(row?.status).not.toBe("Initial");
      if (row) {
        await rest(base, "PUT", `/trainings/${id}/stop`, { key: bob });
        await untilRead(() => rest(base, "GET", `/trainings/${id}`, { key: bob }), (r) => ["Complete", "Fail", "Stopped"].includes(r.body.data?.job_status), "the training to end");
      } else {
        await new Promise((r) => setTimeout(r, 300));
        expect(stack.emulator.calls("CreateTrainingJob").filter((c) => String(c.body.TrainingJobName).endsWith(id.replace(/-/g, "")))).toHaveLength(0);
      }
    }
  }, 30_000);

  it("a stop SageMaker throttles is a 503, and the run job asks again until the training stops", async () => {
    const created = await rest(base, "POST", "/trainings", { key: bob, body: trainingBody(catModel) });
    const id = created.body.data.job.id as string;
    expect((await rest(base, "PUT", `/trainings/${id}/start`, { key: bob })).status).toBe(202);
    await untilRead(() => rest(base, "GET", `/trainings/${id}`, { key: bob }), (r) => r.body.data.job_status === "Training", "Training");
    // The trainer of this (in-process) API and worker: its next StopTrainingJob is throttled.
    const trainer = (stack.runtime.trainings as unknown as { trainer: { stop: (name: string) => Promise<string> } }).trainer;
    const realStop = trainer.stop;
    trainer.stop = async () => {
      trainer.stop = realStop;
      throw Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException", $fault: "client", $metadata: { httpStatusCode: 400 } });
    };
    try {
      const throttled = await rest(base, "PUT", `/trainings/${id}/stop`, { key: bob });
      expect(throttled.status).toBe(503);
      expect(throttled.body.message).toMatch(/did not take the stop .* asked again/);
    } finally {
      trainer.stop = realStop;
    }
    // A pass of the run job (the worker's own passes do the same) sends the stop again.
    await stack.runtime.trainings.run(id);
    const done = await untilRead(() => rest(base, "GET", `/trainings/${id}`, { key: bob }), (r) => ["Complete", "Fail", "Stopped"].includes(r.body.data?.job_status), "the training to end");
    expect(done.body.data.job_status).toBe("Stopped");
  }, 30_000);

  it("refuses to follow a model past its last event (instead of waiting forever)", async () => {
    const subscribe = (query: string, id: string) => {
      const client = createClient({ url: stack.wsUrl, webSocketImpl: WebSocket, connectionParams: { "x-api-key": bob }, retryAttempts: 0 });
      return new Promise<unknown>((resolve) => {
        const timer = setTimeout(() => resolve("no answer"), 3000);
        client.subscribe(
          { query, variables: { id } },
          {
            next: (m) => {
              clearTimeout(timer);
              resolve(m.errors ?? m.data);
            },
            error: (e) => {
              clearTimeout(timer);
              resolve(e);
            },
            complete: () => undefined,
          },
        );
      }).finally(() => void client.dispose());
    };
    const model = await subscribe(`subscription($id: ID!) { modelEvents(id: $id, after: 999) { seq } }`, catModel);
    expect(model).toMatchObject([{ extensions: { code: "BAD_INPUT", field: "after" } }]);
  });
});

