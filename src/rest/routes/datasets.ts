import type { FastifyInstance } from "fastify";
import { DomainError } from "../../domain/errors.js";
import type { Runtime } from "../../runtime.js";
import type { DatasetView } from "../../services/dataset-service.js";
import { sendEnvelope } from "../envelope.js";
import { bodyObject, queryString, refuseUnknownFields, withWireFieldNames } from "../request-body.js";

/** Upstream's `timestamp`: epoch seconds as a string. */
function epochString(d: Date): string {
  return String(d.getTime() / 1000);
}

/** Upstream's dataset info record (GET /datasets item), with Diffgate's additions. Info params come first so they cannot shadow these fields. */
export function wireDataset(d: DatasetView, bucket: string) {
  return {
    ...d.params,
    datasetName: d.name,
    dataset_name: d.name,
    s3: `s3://${bucket}/${d.prefix.replace(/\/$/, "")}`,
    status: d.status,
    timestamp: epochString(d.createdAt),
    creator: d.creator ?? "",
    allowed_roles_or_users: d.allowedRoles,
    file_count: d.fileCount,
  };
}

/** GET /datasets/{name}: upstream's record plus `data`, the items with preview URLs (a superset of the seed's item fields). */
export function wireDatasetDetail(d: DatasetView, bucket: string) {
  const timestamp = epochString(d.createdAt);
  return {
    ...wireDataset(d, bucket),
    data: (d.items ?? []).map((i) => ({
      key: `${timestamp}_${i.name}`,
      name: i.name,
      type: i.type,
      preview_url: i.previewUrl ?? null,
      dataStatus: d.status,
      original_file_name: i.filename,
      s3_key: i.key,
      params: { ...i.params, original_file_name: i.filename },
    })),
  };
}

function objectField(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw DomainError.badInput(`${field}: must be an object`, field);
  return value as Record<string, unknown>;
}

export async function datasetRoutes(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  const bucket = runtime.storage.bucket;
  const wire = { name: "dataset_name", files: "content" };

  app.post("/datasets", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["dataset_name", "content", "creator", "params"]);
    if (!Array.isArray(body.content)) throw DomainError.badInput("content: must be a list of {filename, name, type, params}", "content");
    const files = body.content.map((c, i) => {
      const item = objectField(c, `content.${i}`);
      refuseUnknownFields(item, ["filename", "name", "type", "params"]);
      return { filename: item.filename, type: item.type, ...(item.name !== undefined ? { name: item.name } : {}), ...(item.params !== undefined && item.params !== null ? { params: item.params } : {}) };
    });
    const input = {
      name: body.dataset_name,
      files,
      ...(body.params !== undefined && body.params !== null ? { params: body.params } : {}),
      ...(body.creator !== undefined ? { creator: body.creator } : {}),
    };
    const { dataset, uploads } = await withWireFieldNames(wire, () => runtime.datasets.create(request.principal!, input));
    return sendEnvelope(reply, 201, { datasetName: dataset.name, s3PresignUrl: Object.fromEntries(uploads.map((u) => [u.filename, u.url])), dataset: wireDataset(dataset, bucket) });
  });

  app.put("/datasets/:name", async (request, reply) => {
    const { name } = request.params as { name: string };
    const body = bodyObject(request.body ?? {});
    refuseUnknownFields(body, ["status", "dataset_name"]);
    if (body.dataset_name !== undefined && body.dataset_name !== name) throw DomainError.badInput("dataset_name: must match the name in the path", "dataset_name");
    if (body.status === undefined) throw DomainError.badInput("status: is required (Enabled or Disabled)", "status");
    const dataset = await runtime.datasets.setStatus(request.principal!, name, body.status);
    return sendEnvelope(reply, 200, { datasetName: dataset.name, status: dataset.status, dataset: wireDataset(dataset, bucket) });
  });

  app.get("/datasets", async (request, reply) => {
    const status = queryString(request.query, "dataset_status");
    const datasets = await withWireFieldNames({ status: "dataset_status" }, () => runtime.datasets.list(request.principal!, status !== undefined ? { status } : {}));
    return sendEnvelope(reply, 200, { datasets: datasets.map((d) => wireDataset(d, bucket)) });
  });

  app.get("/datasets/:name", async (request, reply) => {
    const { name } = request.params as { name: string };
    return sendEnvelope(reply, 200, wireDatasetDetail(await runtime.datasets.detail(request.principal!, name), bucket));
  });

  app.delete("/datasets", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["dataset_name_list"]);
    await withWireFieldNames({ names: "dataset_name_list" }, () => runtime.datasets.delete(request.principal!, body.dataset_name_list));
    return sendEnvelope(reply, 204, undefined, "datasets deleted");
  });
}
