import type { FastifyInstance } from "fastify";
import type { Runtime } from "../../runtime.js";
import type { EndpointView } from "../../services/endpoint-service.js";
import { sendEnvelope } from "../envelope.js";
import { bodyObject, queryString, refuseUnknownFields, withWireFieldNames } from "../request-body.js";

/** Python's str(datetime) in UTC, as upstream stored times ("2024-01-19 08:00:00.123000"). */
function upstreamTime(d: Date | null): string | null {
  return d ? `${d.toISOString().replace("T", " ").replace("Z", "")}000` : null;
}

/** The seed's legacy summary field: success / failed / deleted, else null. */
function legacyStatus(e: EndpointView): string | null {
  return e.status === "InService" ? "success" : e.status === "Failed" ? "failed" : e.status === "Deleted" ? "deleted" : null;
}

/** Upstream's endpoint record (§3.3) plus the seed's fields and Diffgate's additions. */
export function wireEndpoint(e: EndpointView) {
  return {
    EndpointDeploymentJobId: e.id,
    endpoint_name: e.name,
    endpoint_status: e.status,
    endpoint_type: e.endpointType,
    instance_type: e.instanceType,
    initial_instance_count: e.initialInstanceCount,
    current_instance_count: String(e.currentInstanceCount),
    autoscaling: e.autoscaling,
    min_instance_number: e.minInstanceNumber,
    max_instance_number: e.maxInstanceNumber,
    owner_group_or_role: e.ownerRoles,
    creator: e.creator,
    custom_docker_image_uri: e.customImage ? e.imageUri : null,
    startTime: upstreamTime(e.createdAt),
    endTime: upstreamTime(e.inServiceAt),
    status: legacyStatus(e),
    error: e.failureReason,
    provider: e.provider,
    ...(e.provider === "webui" ? { base_url: e.baseUrl, has_credentials: e.hasCredentials, server_models: e.serverModels, last_health_check: upstreamTime(e.lastHealthAt) } : {}),
  };
}

const REGISTER_WEBUI_FIELDS = { name: "name", base_url: "baseUrl", username: "username", password: "password", assign_to_roles: "assignToRoles" } as const;

const DEPLOY_FIELDS = {
  endpoint_name: "endpointName",
  endpoint_type: "endpointType",
  instance_type: "instanceType",
  initial_instance_count: "initialInstanceCount",
  autoscaling_enabled: "autoscalingEnabled",
  min_instance_number: "minInstanceNumber",
  max_instance_number: "maxInstanceNumber",
  assign_to_roles: "assignToRoles",
  custom_docker_image_uri: "customDockerImageUri",
  creator: "creator",
} as const;

const WIRE_NAMES = Object.fromEntries(Object.entries(DEPLOY_FIELDS).map(([wire, field]) => [field, wire]));

export async function endpointRoutes(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  app.post("/endpoints", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, Object.keys(DEPLOY_FIELDS));
    const input = Object.fromEntries(Object.entries(body).flatMap(([k, v]) => (v === null ? [] : [[DEPLOY_FIELDS[k as keyof typeof DEPLOY_FIELDS], v]])));
    const endpoint = await withWireFieldNames(WIRE_NAMES, () => runtime.endpoints.deploy(request.principal!, input));
    return sendEnvelope(reply, 202, wireEndpoint(endpoint), `Endpoint deployment started: ${endpoint.name}`);
  });

  // Diffgate's own: a self-hosted WebUI server (AUTOMATIC1111, Forge, SD.Next) as an endpoint.
  app.post("/endpoints/webui", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, Object.keys(REGISTER_WEBUI_FIELDS));
    const input = Object.fromEntries(Object.entries(body).flatMap(([k, v]) => (v === null ? [] : [[REGISTER_WEBUI_FIELDS[k as keyof typeof REGISTER_WEBUI_FIELDS], v]])));
    const wire = Object.fromEntries(Object.entries(REGISTER_WEBUI_FIELDS).map(([w, f]) => [f, w]));
    const endpoint = await withWireFieldNames(wire, () => runtime.endpoints.registerWebUi(request.principal!, input));
    return sendEnvelope(reply, 201, wireEndpoint(endpoint), `WebUI endpoint registered: ${endpoint.name} (${endpoint.status})`);
  });

  app.get("/endpoints", async (request, reply) => {
    // `username` is accepted for compatibility; visibility follows the caller (upstream let the query choose, §12.7).
    const id = queryString(request.query, "endpointDeploymentJobId");
    const status = queryString(request.query, "endpoint_status");
    const endpoints = await withWireFieldNames({ id: "endpointDeploymentJobId", status: "endpoint_status" }, () =>
      runtime.endpoints.list(request.principal!, { ...(id ? { id } : {}), ...(status ? { status } : {}) }),
    );
    return sendEnvelope(reply, 200, { endpoints: endpoints.map(wireEndpoint) });
  });

  app.delete("/endpoints", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["endpoint_name_list", "delete_endpoint_list", "username"]);
    if (body.endpoint_name_list !== undefined && body.delete_endpoint_list !== undefined) {
      return sendEnvelope(reply, 400, undefined, "send endpoint_name_list or delete_endpoint_list, not both");
    }
    const field = body.delete_endpoint_list !== undefined ? "delete_endpoint_list" : "endpoint_name_list";
    await withWireFieldNames({ names: field }, () => runtime.endpoints.delete(request.principal!, body[field], body.username));
    return sendEnvelope(reply, 204, undefined, "Endpoints Deleted");
  });
}
