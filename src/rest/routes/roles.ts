import type { FastifyInstance } from "fastify";
import type { Runtime } from "../../runtime.js";
import { sendEnvelope } from "../envelope.js";
import { bodyObject, queryString, refuseUnknownFields, withWireFieldNames } from "../request-body.js";

export async function roleRoutes(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  app.post("/roles", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["role_name", "creator", "permissions"]);
    const { role, created } = await withWireFieldNames({ roleName: "role_name" }, () =>
      runtime.access.createRole(request.principal!, {
        roleName: body.role_name,
        permissions: body.permissions,
        ...(body.creator !== undefined ? { creator: body.creator } : {}),
      }),
    );
    return sendEnvelope(reply, 201, { role: { role_name: role.name, creator: role.creator ?? "", permissions: role.permissions } }, created ? "role created" : "role updated");
  });

  app.get("/roles", async (request, reply) => {
    const role = queryString(request.query, "role");
    const roles = await runtime.access.listRoles(request.principal!, role === undefined ? {} : { role });
    return sendEnvelope(reply, 200, {
      roles: roles.map((r) => ({ role_name: r.name, creator: r.creator ?? "", permissions: r.permissions })),
      previous_evaluated_key: "not_applicable",
      last_evaluated_key: null,
    });
  });

  app.delete("/roles", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["role_name_list"]);
    await withWireFieldNames({ roleNames: "role_name_list" }, () => runtime.access.deleteRoles(request.principal!, body.role_name_list));
    return sendEnvelope(reply, 204, undefined, "roles deleted");
  });
}
