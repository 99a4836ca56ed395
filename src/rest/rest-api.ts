import type { FastifyInstance } from "fastify";
import type { Principal } from "../domain/principal.js";
import type { Runtime } from "../runtime.js";
import { credentialsFromHeaders } from "./credentials.js";
import { API_VERSION } from "./envelope.js";
import { checkpointRoutes } from "./routes/checkpoints.js";
import { datasetRoutes } from "./routes/datasets.js";
import { endpointRoutes } from "./routes/endpoints.js";
import { inferenceRoutes } from "./routes/inferences.js";
import { pingRoutes } from "./routes/ping.js";
import { roleRoutes } from "./routes/roles.js";
import { trainingRoutes } from "./routes/trainings.js";
import { userRoutes } from "./routes/users.js";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

/**
 * The REST compatibility layer (upstream's routes and wire format). Registered at `/` and, when
 * REST_PREFIX is set, again under it, since clients are configured with an API Gateway stage URL.
 */
export async function restApi(app: FastifyInstance, { runtime }: { runtime: Runtime }): Promise<void> {
  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-api-version", API_VERSION);
    if (request.method === "OPTIONS") return;
    // Routes authorised by a per-job token check it themselves (the inference progress callback).
    // SNS notifications are authorised by their signature.
    const own = request.routeOptions.config as { jobToken?: boolean; snsSigned?: boolean } | undefined;
    if (own?.jobToken === true || own?.snsSigned === true) {
      request.principal = null;
      return;
    }
    // Authenticate before the body is read, so that anonymous callers cannot make us parse megabytes.
    request.principal = await runtime.access.authenticate(credentialsFromHeaders(request.headers));
  });
  await app.register(pingRoutes);
  await app.register(userRoutes, { runtime });
  await app.register(roleRoutes, { runtime });
  await app.register(endpointRoutes, { runtime });
  await app.register(checkpointRoutes, { runtime });
  await app.register(datasetRoutes, { runtime });
  await app.register(inferenceRoutes, { runtime });
  await app.register(trainingRoutes, { runtime });
}
