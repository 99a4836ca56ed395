import type { FastifyInstance } from "fastify";
import { SnsRefused } from "../../adapters/sns/sns-verifier.js";
import { DomainError } from "../../domain/errors.js";
import { upstreamStatus } from "../../domain/inferences.js";
import type { Runtime } from "../../runtime.js";
import type { InferenceView } from "../../services/inference-service.js";
import { credentialsFromHeaders } from "../credentials.js";
import { sendEnvelope } from "../envelope.js";
import { bodyObject, queryList, queryString, refuseUnknownFields, withWireFieldNames } from "../request-body.js";

/** Python's str(datetime) in UTC, as upstream stored times. */
function upstreamTime(d: Date | null): string | null {
  return d ? `${d.toISOString().replace("T", " ").replace("Z", "")}000` : null;
}

/** Upstream's job record (§3.4) with Diffgate's additions (state, endpoint_name, error, progress). */
export function wireInference(v: InferenceView, bucket: string) {
  return {
    InferenceJobId: v.id,
    inference_id: v.id,
    status: upstreamStatus(v.status),
    state: v.status,
    taskType: v.taskType,
    inference_type: "Async",
    owner_group_or_role: v.ownerRoles,
    creator: v.creator,
    createTime: upstreamTime(v.createdAt),
    startTime: upstreamTime(v.queuedAt),
    completeTime: upstreamTime(v.completedAt),
    image_names: v.imageKeys.map((k) => k.split("/").at(-1)),
    inference_info_name: v.paramFileKey ? `/tmp/${v.id}_param.json` : null,
    sagemakerRaw: null,
    endpoint_name: v.endpointName,
    output_path: v.outputLocation,
    error: v.failureReason,
    progress: v.totalSteps ? { step: v.lastStep, total_steps: v.totalSteps } : null,
    queue_position: v.queuePosition,
    params: {
      input_body_s3: `s3://${bucket}/${v.paramsKey}`,
      sagemaker_inference_endpoint_id: v.endpointId,
      sagemaker_inference_endpoint_name: v.endpointName,
      used_models: v.models,
      output_path: v.outputLocation,
    },
  };
}

/** Fields of upstream's first step; anything else in the body is a WebUI parameter (the seed's one shot). */
const CREATE_FIELDS = ["task_type", "inference_type", "models", "filters", "sagemaker_endpoint_name", "user_id", "parameters"] as const;
const WIRE_NAMES = { taskType: "task_type", endpointName: "sagemaker_endpoint_name", inferenceType: "inference_type", models: "models", parameters: "parameters", idempotencyKey: "Idempotency-Key" };

/** REST status words → Diffgate states (filters accept both). */
const STATUS_WORDS: Record<string, string[]> = { created: ["CREATED"], inprogress: ["QUEUED", "DISPATCHED", "RUNNING"], succeed: ["SUCCEEDED"], failed: ["FAILED"], cancelled: ["CANCELLED"] };

export async function inferenceRoutes(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  const bucket = runtime.storage.bucket;

  app.post("/inferences", async (request, reply) => {
    const body = bodyObject(request.body);
    const webui = Object.fromEntries(Object.entries(body).filter(([k]) => !(CREATE_FIELDS as readonly string[]).includes(k)));
    if (body.parameters !== undefined && Object.keys(webui).length) throw DomainError.badInput(`send the WebUI parameters either in "parameters" or at the top level, not both (${Object.keys(webui).join(", ")})`, "parameters");
    const parameters = body.parameters ?? (Object.keys(webui).length ? webui : undefined);
    const rawKey = request.headers["idempotency-key"];
    const key = Array.isArray(rawKey) ? rawKey[0] : rawKey;
    const input = {
      taskType: body.task_type,
      endpointName: body.sagemaker_endpoint_name,
      ...(body.inference_type != null ? { inferenceType: body.inference_type } : {}),
      ...(body.models != null ? { models: body.models } : {}),
      ...(parameters !== undefined ? { parameters } : {}),
    };
    const { inference, paramsUploadUrl, replayed } = await withWireFieldNames(WIRE_NAMES, () => runtime.inferences.create(request.principal!, input, key));
    if (paramsUploadUrl === undefined) {
      // The seed's one-shot answer (a replayed two-step creation answers the same way: the URL is not issued twice).
      return sendEnvelope(reply, replayed ? 200 : 202, { inference_id: inference.id, status: upstreamStatus(inference.status), endpoint_name: inference.endpointName, output_path: inference.outputLocation, inference: wireInference(inference, bucket) });
    }
    const models = Object.values(inference.models).flat().map((m) => ({ id: m.id, name: [m.model_name], type: m.type }));
    return sendEnvelope(reply, 201, {
      inference: {
        id: inference.id,
        type: inference.taskType,
        api_params_s3_location: `s3://${bucket}/${inference.paramsKey}`,
        api_params_s3_upload_url: paramsUploadUrl,
        ...(inference.taskType === "txt2img" || inference.taskType === "img2img" ? { models } : {}),
      },
    });
  });

  app.put("/inferences/:id/start", async (request, reply) => {
    const { id } = request.params as { id: string };
    const inference = await runtime.inferences.start(request.principal!, id);
    return sendEnvelope(reply, 202, { inference: { inference_id: inference.id, status: upstreamStatus(inference.status), endpoint_name: inference.endpointName, output_path: inference.outputLocation } });
  });

  app.put("/inferences/:id/cancel", async (request, reply) => {
    const { id } = request.params as { id: string };
    const outcome = await runtime.inferences.cancel(request.principal!, id);
    return sendEnvelope(reply, 200, { inference: wireInference(outcome.inference, bucket), cancelled: outcome.cancelled }, outcome.message);
  });

  app.get("/inferences/:id", async (request, reply) => {
    const { id } = request.params as { id: string };
    const inference = await runtime.inferences.view(request.principal!, id);
    const urls = await runtime.inferences.resultUrls(inference);
    return sendEnvelope(reply, 200, { img_presigned_urls: urls.images, output_presigned_urls: urls.outputs, preview_url: urls.preview, ...wireInference(inference, bucket) });
  });

  app.get("/inferences", async (request, reply) => {
    const q = request.query;
    const statuses = queryList(q, "status")?.flatMap((s) => STATUS_WORDS[s] ?? [s.toUpperCase()]);
    const taskTypes = queryList(q, "task_type");
    const limit = queryString(q, "limit");
    const cursor = queryString(q, "exclusive_start_key");
    const endpoint = queryString(q, "endpoint");
    const start = queryString(q, "start_time");
    const end = queryString(q, "end_time");
    const username = queryString(q, "username");
    const page = await withWireFieldNames({ statuses: "status", taskTypes: "task_type", first: "limit", after: "exclusive_start_key", endpointName: "endpoint", createdAfter: "start_time", createdBefore: "end_time" }, () =>
      runtime.inferences.list(request.principal!, {
        ...(statuses ? { statuses } : {}),
        ...(taskTypes ? { taskTypes } : {}),
        ...(endpoint ? { endpointName: endpoint } : {}),
        ...(start ? { createdAfter: start } : {}),
        ...(end ? { createdBefore: end } : {}),
        ...(username ? { username } : {}),
        ...(limit ? { first: Number(limit) } : {}),
        ...(cursor ? { after: cursor } : {}),
      }),
    );
    return sendEnvelope(reply, 200, { inferences: page.items.map((i) => wireInference(i, bucket)), last_evaluated_key: page.hasNextPage ? page.endCursor : null });
  });

  app.delete("/inferences", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["inference_id_list"]);
    await withWireFieldNames({ ids: "inference_id_list" }, () => runtime.inferences.delete(request.principal!, body.inference_id_list));
    return sendEnvelope(reply, 204, undefined, "inferences deleted");
  });

  // The container's progress callback (docs/progress-callback.md): authorised by the job's own token, not an API key.
  app.post("/internal/inferences/:id/progress", { config: { jobToken: true }, bodyLimit: 256 * 1024 }, async (request, reply) => {
    const { id } = request.params as { id: string };
    await runtime.inferences.progress(id, credentialsFromHeaders(request.headers).bearer, request.body);
    return reply.code(204).send();
  });

  // SageMaker's async-inference notifications through SNS (success and error topics): verified by
  // signature, subscriptions confirmed; each notification makes one look at the job's output.
  app.post("/internal/sagemaker-notifications", { config: { snsSigned: true }, bodyLimit: 256 * 1024 }, async (request, reply) => {
    let message;
    try {
      message = await runtime.sns.verify(request.body);
    } catch (e) {
      if (e instanceof SnsRefused) return sendEnvelope(reply, 403, undefined, e.message);
      throw e;
    }
    if (message.Type === "SubscriptionConfirmation") {
      await runtime.sns.confirm(message);
      return sendEnvelope(reply, 200, { confirmed: true, topic: message.TopicArn });
    }
    if (message.Type === "UnsubscribeConfirmation") return sendEnvelope(reply, 200, { ignored: true });
    let body: unknown;
    try {
      body = JSON.parse(message.Message);
    } catch {
      return sendEnvelope(reply, 400, undefined, "the notification's Message is not JSON");
    }
    const outcome = await runtime.inferences.notified(body);
    return sendEnvelope(reply, 200, { inference_id: outcome.inferenceId, handled: outcome.handled });
  });
}
