import type { FastifyInstance } from "fastify";
import { sendEnvelope } from "../envelope.js";

export async function pingRoutes(app: FastifyInstance): Promise<void> {
  // Upstream answers {"statusCode":200,"message":"pong"}; the seed's {"message":"Success"} cannot be
  // combined with it (same field), and the WebUI extension only checks the status.
  app.get("/ping", async (_request, reply) => sendEnvelope(reply, 200, undefined, "pong"));
}
