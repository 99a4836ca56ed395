import type { FastifyInstance } from "fastify";
import type { UserView } from "../../services/access-service.js";
import type { Runtime } from "../../runtime.js";
import { sendEnvelope } from "../envelope.js";
import { bodyObject, queryString, refuseUnknownFields, withWireFieldNames } from "../request-body.js";

/** Upstream's user record; the password is always masked (upstream could reveal it with show_password). */
function wireUser(u: UserView) {
  return { username: u.username, roles: u.roles, creator: u.creator ?? "", permissions: u.permissions, password: "********" };
}

export async function userRoutes(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  app.post("/users", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["username", "password", "creator", "initial", "roles"]);
    const { user, created } = await runtime.access.createUser(request.principal!, body);
    if (body.initial === true) {
      const allRoles = (await runtime.access.listRoles(request.principal!)).map((r) => r.name);
      return sendEnvelope(reply, 201, { user: { username: user.username, roles: user.roles }, all_roles: allRoles }, created ? "Created" : "user already exists; nothing changed");
    }
    return sendEnvelope(reply, 201, { user: wireUser(user) }, created ? "Created" : "Updated");
  });

  app.get("/users", async (request, reply) => {
    // show_password is accepted and ignored: passwords are stored as one-way hashes.
    const username = queryString(request.query, "username");
    const users = await runtime.access.listUsers(request.principal!, username === undefined ? {} : { username });
    return sendEnvelope(reply, 200, { users: users.map(wireUser), previous_evaluated_key: "not_applicable", last_evaluated_key: "not_applicable" });
  });

  app.delete("/users", async (request, reply) => {
    const body = bodyObject(request.body);
    refuseUnknownFields(body, ["user_name_list"]);
    await withWireFieldNames({ usernames: "user_name_list" }, () => runtime.access.deleteUsers(request.principal!, body.user_name_list));
    return sendEnvelope(reply, 204, undefined, "Users Deleted");
  });
}
