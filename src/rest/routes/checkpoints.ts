import type { FastifyInstance } from "fastify";
import { DomainError } from "../../domain/errors.js";
import type { CheckpointType } from "../../domain/checkpoints.js";
import type { Runtime } from "../../runtime.js";
import type { CheckpointView, UploadTicket } from "../../services/checkpoint-service.js";
import { sendEnvelope } from "../envelope.js";
import { bodyObject, queryList, queryString, refuseUnknownFields, withWireFieldNames } from "../request-body.js";

/** Python's str(datetime) in UTC, as upstream wrote `params.created`. */
function upstreamTime(d: Date): string {
  return `${d.toISOString().replace("T", " ").replace("Z", "")}000`;
}

/** Upstream's checkpoint record (GET /checkpoints item), with Diffgate's additions. */
export function wireCheckpoint(c: CheckpointView, bucket: string, uploads: UploadTicket[] = []) {
  const multipart = Object.fromEntries(
    c.files.filter((f) => f.uploadId).map((f) => [f.name, { upload_id: f.uploadId, bucket, key: f.key }]),
  );
  for (const u of uploads) multipart[u.fileName] = { upload_id: u.uploadId, bucket, key: u.key };
  return {
    id: c.id,
    type: c.type,
    status: c.status,
    name: c.files.map((f) => f.name),
    s3Location: `s3://${bucket}/${c.prefix.replace(/\/$/, "")}`,
    s3_location: `s3://${bucket}/${c.prefix.replace(/\/$/, "")}`,
    created: String(c.createdAt.getTime() / 1000),
    allowed_roles_or_users: c.allowedRoles,
    params: { message: c.message ?? "", creator: c.creator ?? "", created: upstreamTime(c.createdAt), ...(Object.keys(multipart).length ? { multipart_upload: multipart } : {}) },
    files: c.files.map((f) => ({ name: f.name, size: f.sizeBytes, source_url: f.sourceUrl })),
    error: c.failureReason,
  };
}

const LIST_ROUTES: Array<[string, CheckpointType]> = [
  ["/inference/get-texual-inversion-list", "embeddings"],
  ["/inference/get-lora-list", "Lora"],
  ["/inference/get-hypernetwork-list", "hypernetworks"],
  ["/inference/get-controlnet-model-list", "ControlNet"],
];

export async function checkpointRoutes(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  const bucket = runtime.storage.bucket;

  app.post("/checkpoints", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["checkpoint_type", "filenames", "urls", "params"]);
    const params = body.params === undefined || body.params === null ? {} : bodyObjectField(body.params, "params");
    const common = {
      type: body.checkpoint_type,
      ...(typeof params.message === "string" ? { message: params.message } : {}),
      ...(params.creator !== undefined ? { creator: params.creator } : {}),
    };
    if ((body.filenames === undefined) === (body.urls === undefined)) throw DomainError.badInput("send either filenames (upload) or urls (import)", "filenames");
    if (body.urls !== undefined) {
      const checkpoint = await withWireFieldNames({ type: "checkpoint_type" }, () => runtime.checkpoints.importFromUrls(request.principal!, { ...common, urls: body.urls }));
      return sendEnvelope(reply, 202, { checkpoint: wireCheckpoint(checkpoint, bucket) }, "Checkpoint creation in progress, please check later");
    }
    if (!Array.isArray(body.filenames)) throw DomainError.badInput("filenames: must be a list of {filename, parts_number}", "filenames");
    const files = body.filenames.map((f, i) => {
      const item = bodyObjectField(f, `filenames.${i}`);
      refuseUnknownFields(item, ["filename", "parts_number", "size"]);
      return { name: item.filename, partsNumber: item.parts_number, ...(item.size !== undefined ? { sizeBytes: item.size } : {}) };
    });
    const { checkpoint, uploads } = await withWireFieldNames({ type: "checkpoint_type", files: "filenames" }, () => runtime.checkpoints.createUpload(request.principal!, { ...common, files }));
    return sendEnvelope(reply, 201, { checkpoint: wireCheckpoint(checkpoint, bucket, uploads), s3PresignUrl: Object.fromEntries(uploads.map((u) => [u.fileName, u.partUrls])) });
  });

  app.put("/checkpoints/:id", async (request, reply) => {
    const { id } = request.params as { id: string };
    const body = bodyObject(request.body ?? {});
    refuseUnknownFields(body, ["status", "name", "multi_parts_tags", "checkpoint_id"]);
    if (body.checkpoint_id !== undefined && body.checkpoint_id !== id) throw DomainError.badInput("checkpoint_id: must match the id in the path", "checkpoint_id");
    const principal = request.principal!;
    if (body.status !== undefined) {
      const checkpoint = await withWireFieldNames({ parts: "multi_parts_tags" }, () => runtime.checkpoints.updateStatus(principal, id, body.status, body.multi_parts_tags));
      return sendEnvelope(reply, 200, { checkpoint: wireCheckpoint(checkpoint, bucket) });
    }
    if (body.name !== undefined) {
      const { checkpoint, changed } = await runtime.checkpoints.rename(principal, id, body.name);
      return sendEnvelope(reply, changed ? 202 : 200, { checkpoint: wireCheckpoint(checkpoint, bucket) }, changed ? "rename is processing, please wait" : "no need to update");
    }
    return sendEnvelope(reply, 200, { checkpoint: wireCheckpoint(await runtime.checkpoints.view(principal, id), bucket) });
  });

  app.get("/checkpoints", async (request, reply) => {
    // `username` and `roles` are accepted and ignored: visibility follows the caller.
    const statuses = queryList(request.query, "status");
    const types = queryList(request.query, "types");
    const cursor = queryString(request.query, "cursor");
    const limit = queryString(request.query, "limit");
    if (cursor !== undefined || limit !== undefined) {
      const page = await withWireFieldNames({ statuses: "status", after: "cursor", first: "limit" }, () =>
        runtime.checkpoints.list(request.principal!, { ...(statuses ? { statuses } : {}), ...(types ? { types } : {}), ...(cursor ? { after: cursor } : {}), ...(limit ? { first: Number(limit) } : {}) }),
      );
      return sendEnvelope(reply, 200, { checkpoints: page.items.map((c) => wireCheckpoint(c, bucket)), next_cursor: page.hasNextPage ? page.endCursor : null });
    }
    const result = await withWireFieldNames({ statuses: "status" }, () =>
      runtime.checkpoints.listPage(request.principal!, {
        ...(statuses ? { statuses } : {}),
        ...(types ? { types } : {}),
        page: queryString(request.query, "page") ?? "1",
        perPage: queryString(request.query, "per_page") ?? "10",
      }),
    );
    return sendEnvelope(reply, 200, {
      page: result.page,
      per_page: result.perPage,
      pages: Math.ceil(result.total / result.perPage),
      total: result.total,
      checkpoints: result.items.map((c) => wireCheckpoint(c, bucket)),
    });
  });

  app.delete("/checkpoints", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["checkpoint_id_list"]);
    await withWireFieldNames({ ids: "checkpoint_id_list" }, () => runtime.checkpoints.delete(request.principal!, body.checkpoint_id_list));
    return sendEnvelope(reply, 204, undefined, "checkpoints deleted");
  });

  // The seed's legacy FastAPI routes answer bare JSON, as they did.
  for (const [route, type] of LIST_ROUTES) {
    app.get(route, async (request, reply) => reply.type("application/json; charset=utf-8").send(await runtime.checkpoints.activeNames(request.principal!, type)));
  }
  app.get("/inference/generate-s3-presigned-url-for-uploading", async (request, reply) => {
    const requestedBucket = queryString(request.query, "s3_bucket_name");
    if (requestedBucket !== undefined && requestedBucket !== bucket) throw DomainError.badInput(`s3_bucket_name: only the bucket ${bucket} can be used`, "s3_bucket_name");
    const { url } = await runtime.checkpoints.presignedUploadUrl(request.principal!, queryString(request.query, "key"));
    return reply.type("application/json; charset=utf-8").send(JSON.stringify(url));
  });
}

function bodyObjectField(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw DomainError.badInput(`${field}: must be an object`, field);
  return value as Record<string, unknown>;
}
