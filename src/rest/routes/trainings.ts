import type { FastifyInstance } from "fastify";
import { DomainError } from "../../domain/errors.js";
import type { Runtime } from "../../runtime.js";
import type { MergeView, ModelView } from "../../services/model-service.js";
import type { TrainingView } from "../../services/training-service.js";
import { sendEnvelope } from "../envelope.js";
import { bodyObject, queryList, refuseUnknownFields, withWireFieldNames } from "../request-body.js";

/** Upstream's `created` / `timestamp`: epoch seconds as a string. */
const epochString = (d: Date) => String(d.getTime() / 1000);

function objectOrEmpty(value: unknown, field: string): Record<string, unknown> {
  if (value === undefined || value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) throw DomainError.badInput(`${field}: must be an object`, field);
  return value as Record<string, unknown>;
}

/** Upstream's model record (GET /models item) with Diffgate's additions. */
export function wireModel(m: ModelView) {
  return {
    id: m.id,
    model_name: m.name,
    model_type: m.modelType,
    created: epochString(m.createdAt),
    params: m.params,
    status: m.status,
    output_s3_location: m.outputLocation,
    output_files: m.outputKeys,
    checkpoint_id: m.checkpointId,
    endpoint_name: m.endpointName,
    result: m.result,
    error: m.failureReason,
    creator: m.creator,
  };
}

/** Upstream's training record (GET /trainings/{id}) with the list's camelCase names beside it. */
export function wireTraining(t: TrainingView) {
  return {
    id: t.id,
    job_status: t.status,
    status: t.status,
    secondary_status: t.secondaryStatus,
    train_type: t.trainType,
    trainType: t.trainType,
    model_id: t.modelId,
    modelName: t.modelName,
    checkpoint_id: t.checkpointId,
    params: t.params,
    timestamp: epochString(t.createdAt),
    created: epochString(t.createdAt),
    sagemakerTrainName: t.sagemakerJobName,
    sagemaker_train_name: t.sagemakerJobName,
    instance_type: t.instanceType,
    datasets: t.datasets,
    input_location: t.inputLocation,
    output_location: t.outputLocation,
    input_files: t.inputFiles,
    spot: t.spot,
    metrics: t.metrics,
    artifact: t.artifactUri,
    error: t.failureReason,
    creator: t.creator,
    start_time: t.startedAt?.toISOString() ?? null,
    end_time: t.completedAt?.toISOString() ?? null,
  };
}

function wireMerge(m: MergeView) {
  return {
    id: m.id,
    status: m.status,
    checkpoints: m.checkpoints,
    interp_method: m.method,
    interp_amount: m.ratio,
    result_name: m.resultName,
    endpoint_name: m.endpointName,
    checkpoint_id: m.checkpointId,
    error: m.failureReason,
    created: epochString(m.createdAt),
  };
}

const TRAINING_WIRE = {
  trainType: "train_type",
  modelId: "model_id",
  datasets: "params.training_params.data_tar_list",
  classDatasets: "params.training_params.class_data_tar_list",
  instanceType: "params.training_params.training_instance_type",
  spot: "params.training_params.use_spot",
  filenames: "filenames",
  params: "params",
};

export async function trainingRoutes(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  // ------------------------------------------------------------ models

  app.post("/models", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["model_type", "name", "filenames", "params", "creator", "checkpoint_id"]);
    const filenames = body.filenames ?? [];
    if (!Array.isArray(filenames)) throw DomainError.badInput("filenames: must be a list of {filename, parts_number}", "filenames");
    const files = filenames.map((f, i) => {
      const o = objectOrEmpty(f, `filenames.${i}`);
      refuseUnknownFields(o, ["filename", "parts_number"]);
      return { name: o.filename, partsNumber: o.parts_number };
    });
    const input = {
      name: body.name,
      ...(body.model_type != null ? { modelType: body.model_type } : {}),
      // Upstream's default for checkpoint_id is "": absent.
      ...(body.checkpoint_id != null && body.checkpoint_id !== "" ? { checkpointId: body.checkpoint_id } : {}),
      ...(files.length ? { files } : {}),
      ...(body.params != null ? { params: body.params } : {}),
      ...(body.creator !== undefined ? { creator: body.creator } : {}),
    };
    const wire = { name: "name", modelType: "model_type", checkpointId: "checkpoint_id", files: "filenames", params: "params" };
    const { model, uploads } = await withWireFieldNames(wire, () => runtime.models.create(request.principal!, input));
    const checkpoint = await runtime.checkpoints.view(request.principal!, model.checkpointId).catch(() => undefined);
    return sendEnvelope(reply, 201, {
      job: {
        id: model.id,
        status: model.status,
        s3_base: checkpoint ? `s3://${runtime.storage.bucket}/${checkpoint.prefix.replace(/\/$/, "")}` : null,
        model_type: model.modelType,
        params: model.params,
        checkpoint_id: model.checkpointId,
        s3PresignUrl: uploads.map((u) => ({ upload_id: u.uploadId, bucket: runtime.storage.bucket, key: u.key })),
      },
      s3PresignUrl: Object.fromEntries(uploads.map((u) => [u.fileName, u.partUrls])),
    });
  });

  app.put("/models/:id", async (request, reply) => {
    const { id } = request.params as { id: string };
    const body = bodyObject(request.body ?? {});
    refuseUnknownFields(body, ["status", "multi_parts_tags", "model_id"]);
    if (body.model_id !== undefined && body.model_id !== id) throw DomainError.badInput("model_id: must match the id in the path", "model_id");
    const model = await withWireFieldNames({ parts: "multi_parts_tags" }, () => runtime.models.setStatus(request.principal!, id, body.status, body.multi_parts_tags));
    return sendEnvelope(reply, 200, { job: { output_path: model.outputLocation, id: model.id, endpointName: model.endpointName, jobStatus: model.status, jobType: model.modelType }, model: wireModel(model) });
  });

  app.get("/models", async (request, reply) => {
    const types = queryList(request.query, "types");
    const statuses = queryList(request.query, "status");
    const models = await withWireFieldNames({ statuses: "status" }, () => runtime.models.list(request.principal!, { ...(types ? { types } : {}), ...(statuses ? { statuses } : {}) }));
    return sendEnvelope(reply, 200, { models: models.map(wireModel) });
  });

  app.get("/models/:id", async (request, reply) => {
    const { id } = request.params as { id: string };
    return sendEnvelope(reply, 200, wireModel(await runtime.models.view(request.principal!, id)));
  });

  app.delete("/models", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["model_id_list"]);
    await withWireFieldNames({ ids: "model_id_list" }, () => runtime.models.deleteModels(request.principal!, body.model_id_list));
    return sendEnvelope(reply, 204, undefined, "models deleted");
  });

  // ------------------------------------------------------------ trainings

  app.post("/trainings", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["train_type", "model_id", "params", "filenames", "creator"]);
    const params = objectOrEmpty(body.params, "params");
    const tp = objectOrEmpty(params.training_params, "params.training_params");
    const input = {
      trainType: body.train_type,
      modelId: body.model_id,
      params,
      ...(tp.data_tar_list != null ? { datasets: tp.data_tar_list } : {}),
      ...(tp.class_data_tar_list != null ? { classDatasets: tp.class_data_tar_list } : {}),
      ...(tp.training_instance_type != null ? { instanceType: tp.training_instance_type } : {}),
      ...(tp.use_spot != null ? { spot: tp.use_spot } : {}),
      ...(body.filenames != null ? { filenames: body.filenames } : {}),
      ...(body.creator !== undefined ? { creator: body.creator } : {}),
    };
    const { training, uploads } = await withWireFieldNames(TRAINING_WIRE, () => runtime.trainings.create(request.principal!, input));
    return sendEnvelope(reply, 201, {
      job: { id: training.id, status: training.status, trainType: training.trainType, params: training.params, input_location: training.inputLocation, training: wireTraining(training) },
      s3PresignUrl: uploads.length ? Object.fromEntries(uploads.map((u) => [u.filename, u.url])) : null,
    });
  });

  app.get("/trainings", async (request, reply) => {
    const types = queryList(request.query, "types");
    const statuses = queryList(request.query, "status");
    const list = await withWireFieldNames({ statuses: "status" }, () => runtime.trainings.list(request.principal!, { ...(types ? { types } : {}), ...(statuses ? { statuses } : {}) }));
    return sendEnvelope(reply, 200, { trainJobs: list.map(wireTraining) });
  });

  app.get("/trainings/:id", async (request, reply) => {
    const { id } = request.params as { id: string };
    return sendEnvelope(reply, 200, wireTraining(await runtime.trainings.view(request.principal!, id)));
  });

  app.put("/trainings/:id/start", async (request, reply) => {
    const { id } = request.params as { id: string };
    const t = await runtime.trainings.start(request.principal!, id);
    return sendEnvelope(reply, 202, { job: wireTraining(t) });
  });

  app.put("/trainings/:id/stop", async (request, reply) => {
    const { id } = request.params as { id: string };
    const t = await runtime.trainings.stop(request.principal!, id);
    return sendEnvelope(reply, 200, { job: wireTraining(t) });
  });

  // The seed's PUT /trainings/{id} {train_job_id, status}: Training starts, Stopped stops.
  app.put("/trainings/:id", async (request, reply) => {
    const { id } = request.params as { id: string };
    const body = bodyObject(request.body ?? {});
    refuseUnknownFields(body, ["status", "train_job_id"]);
    if (body.train_job_id !== undefined && body.train_job_id !== id) throw DomainError.badInput("train_job_id: must match the id in the path", "train_job_id");
    let t: TrainingView;
    if (body.status === "Training" || body.status === "Start" || body.status === "Starting") t = await runtime.trainings.start(request.principal!, id);
    else if (body.status === "Stopped" || body.status === "Stop" || body.status === "Stopping") t = await runtime.trainings.stop(request.principal!, id);
    else throw DomainError.badInput("status: must be Training (start) or Stopped (stop)", "status");
    return sendEnvelope(reply, 200, { job: { id: t.id, status: t.status, created: Number(epochString(t.createdAt)), trainType: t.trainType, params: t.params, input_location: t.inputLocation }, training: wireTraining(t) });
  });

  app.delete("/trainings", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["training_id_list"]);
    await withWireFieldNames({ ids: "training_id_list" }, () => runtime.trainings.delete(request.principal!, body.training_id_list));
    return sendEnvelope(reply, 204, undefined, "training jobs deleted");
  });

  // ------------------------------------------------------------ merge

  app.post("/inference/run-model-merge", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["primary_model_name", "secondary_model_name", "tertiary_model_name", "teritary_model_name", "interp_method", "interp_amount", "custom_name", "checkpoint_format", "save_as_half", "sagemaker_endpoint_name"]);
    const tertiary = body.tertiary_model_name ?? body.teritary_model_name;
    const names = [body.primary_model_name, body.secondary_model_name, ...(tertiary !== undefined && tertiary !== null && tertiary !== "" ? [tertiary] : [])];
    const input = {
      checkpoints: names.filter((n) => n !== undefined && n !== null),
      ...(body.interp_method != null ? { method: body.interp_method } : {}),
      ...(body.interp_amount != null ? { ratio: body.interp_amount } : {}),
      ...(body.custom_name != null && body.custom_name !== "" ? { name: body.custom_name } : {}),
      ...(body.checkpoint_format != null ? { format: body.checkpoint_format } : {}),
      ...(body.save_as_half != null ? { saveAsHalf: body.save_as_half } : {}),
      ...(body.sagemaker_endpoint_name != null ? { endpointName: body.sagemaker_endpoint_name } : {}),
    };
    if (body.primary_model_name == null || body.secondary_model_name == null) throw DomainError.badInput(`${body.primary_model_name == null ? "primary_model_name" : "secondary_model_name"}: is required (a merge needs two or three checkpoints)`, body.primary_model_name == null ? "primary_model_name" : "secondary_model_name");
    const wire = { method: "interp_method", ratio: "interp_amount", name: "custom_name", format: "checkpoint_format", saveAsHalf: "save_as_half", endpointName: "sagemaker_endpoint_name", checkpoints: "checkpoints" };
    const merge = await withWireFieldNames(wire, () => runtime.models.merge(request.principal!, input));
    return sendEnvelope(reply, 202, { primary_model_name: merge.checkpoints[0], secondary_model_name: merge.checkpoints[1], tertiary_model_name: merge.checkpoints[2] ?? "", merge: wireMerge(merge) });
  });

  app.get("/inference/run-model-merge/:id", async (request, reply) => {
    const { id } = request.params as { id: string };
    return sendEnvelope(reply, 200, { merge: wireMerge(await runtime.models.mergeView(request.principal!, id)) });
  });
}
