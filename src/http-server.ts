import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { ApolloServer } from "@apollo/server";
import { ApolloServerPluginLandingPageDisabled } from "@apollo/server/plugin/disabled";
import fastifyApollo from "@as-integrations/fastify";
import cors from "@fastify/cors";
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance } from "fastify";
import { GraphQLError, type ExecutionResult, type GraphQLFormattedError } from "graphql";
import { CloseCode } from "graphql-ws";
import { useServer } from "graphql-ws/use/ws";
import { WebSocketServer } from "ws";
import { DomainError } from "./domain/errors.js";
import type { Principal } from "./domain/principal.js";
import { createContext, type GraphQLContext } from "./graphql/context.js";
import { asDependencyOutage, OUTAGE_RETRY_AFTER_SECONDS } from "./adapters/dependency-outage.js";
import { formatGraphQLError, isExpectedGraphQLError } from "./graphql/error-mapping.js";
import { graphiqlPage } from "./graphql/graphiql-page.js";
import { graphQLSchema } from "./graphql/schema.js";
import { credentialsFromConnectionParams, credentialsFromHeaders } from "./rest/credentials.js";
import { sendEnvelope } from "./rest/envelope.js";
import { describeFrameworkError, HTTP_STATUS_BY_CODE } from "./rest/error-mapping.js";
import { restApi } from "./rest/rest-api.js";
import type { Runtime } from "./runtime.js";
import { runProbes } from "./services/dependency-probes.js";

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const ALLOWED_HEADERS = ["Content-Type", "X-Amz-Date", "Authorization", "X-Api-Key", "X-Amz-Security-Token", "X-Amz-User-Agent", "Idempotency-Key", "X-Request-Id", "Apollo-Require-Preflight"];

export interface HttpServer {
  app: FastifyInstance;
  /** Listens and returns the base URL. */
  listen(port: number, host: string): Promise<string>;
  /** Stops accepting, closes subscriptions with 1001, and waits for in-flight requests. */
  close(): Promise<void>;
}

/** One port: REST compatibility layer, GraphQL over HTTP and graphql-ws, GraphiQL, and operations routes. */
export async function createHttpServer(runtime: Runtime): Promise<HttpServer> {
  const { config, log } = runtime;
  const app = Fastify({
    loggerInstance: log as unknown as FastifyBaseLogger,
    bodyLimit: config.bodyLimitBytes,
    genReqId: (req: IncomingMessage) => {
      const given = req.headers["x-request-id"];
      return typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
    },
    forceCloseConnections: "idle",
    return503OnClosing: true,
    routerOptions: { ignoreTrailingSlash: true },
  });
  app.decorateRequest("principal", null);
  // Upstream's Lambdas parsed every body as JSON whatever its Content-Type (Python clients often send
  // none, or text/plain); do the same rather than refusing them.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser("*", { parseAs: "string" }, (_request, body, done) => {
    const text = String(body);
    if (text.trim() === "") return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(Object.assign(new Error((e as Error).message), { statusCode: 400, code: "FST_ERR_CTP_INVALID_JSON_BODY" }), undefined);
    }
  });

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });
  app.addHook("onResponse", async (request, reply) => {
    runtime.metrics.httpDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? "unmatched", status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  await app.register(cors, {
    origin: config.corsOrigins === "*" ? "*" : config.corsOrigins,
    credentials: false,
    methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    allowedHeaders: ALLOWED_HEADERS,
    exposedHeaders: ["x-api-version", "x-request-id"],
    maxAge: 600,
  });

  app.setErrorHandler((error: FastifyError | DomainError | Error, request, reply) => {
    const isGraphQL = request.url.startsWith("/graphql");
    let status: number;
    let message: string;
    let code: string;
    const outage = asDependencyOutage(error);
    if (outage) {
      request.log.warn({ err: error }, outage.message);
      reply.header("retry-after", String(OUTAGE_RETRY_AFTER_SECONDS));
    }
    const domainError = error instanceof DomainError ? error : outage;
    if (domainError) {
      status = HTTP_STATUS_BY_CODE[domainError.code];
      message = domainError.message;
      code = domainError.code;
    } else {
      const known = describeFrameworkError(error as FastifyError, config.bodyLimitBytes);
      if (known) {
        status = known.status;
        message = known.message;
        code = status === 413 ? "PAYLOAD_TOO_LARGE" : "BAD_INPUT";
      } else {
        request.log.error({ err: error }, "unhandled error");
        status = 500;
        message = `internal error (request id ${request.id})`;
        code = "INTERNAL";
      }
    }
    if (status >= 500) request.log.warn({ status, code }, message);
    if (isGraphQL) return reply.code(status).send({ errors: [{ message, extensions: { code } }] });
    return sendEnvelope(reply, status, undefined, message);
  });
  app.setNotFoundHandler((request, reply) => sendEnvelope(reply, 404, undefined, `no route ${request.method} ${request.url.split("?")[0]}`));

  // ---------------------------------------------------------------- operations
  app.get("/healthz", async () => ({ status: "ok" }));
  app.get("/readyz", async (_request, reply) => {
    const probes = await runProbes(runtime.readinessProbes, 2000);
    const ready = probes.every((p) => p.ok);
    return reply.code(ready ? 200 : 503).send({ status: ready ? "ready" : "not ready", probes });
  });
  app.get("/metrics", async (_request, reply) => reply.type(runtime.metrics.registry.contentType).send(await runtime.metrics.registry.metrics()));
  if (config.graphiql) app.get("/graphiql", async (_request, reply) => reply.type("text/html; charset=utf-8").header("cache-control", "no-cache").send(await graphiqlPage()));

  // ---------------------------------------------------------------- REST
  await app.register(restApi, { runtime });
  if (config.restPrefix) await app.register(restApi, { runtime, prefix: config.restPrefix });

  // ---------------------------------------------------------------- GraphQL (HTTP + graphql-ws)
  const schema = await graphQLSchema();
  // Over HTTP, unexpected errors are logged by the plugin below with the request's id; over
  // graphql-ws (no request), by the formatter itself.
  const formatHttpError = (formatted: GraphQLFormattedError, error: unknown) => formatGraphQLError(formatted, error);
  const formatError = (formatted: GraphQLFormattedError, error: unknown) => formatGraphQLError(formatted, error, log);
  const wss = new WebSocketServer({ server: app.server, path: "/graphql", maxPayload: config.bodyLimitBytes });
  const socketPrincipals = new WeakMap<object, Principal>();
  const wsServer = useServer<Record<string, unknown> | undefined, { socket: unknown; request: IncomingMessage }>(
    {
      schema,
      onConnect: async (ctx) => {
        const credentials = credentialsFromConnectionParams(ctx.connectionParams);
        const socket = ctx.extra.socket as { close(code: number, reason: string): void };
        if (!credentials.apiKey && !credentials.bearer) {
          socket.close(CloseCode.Unauthorized, "Unauthorized: send x-api-key or a token in connection_init");
          return false;
        }
        try {
          socketPrincipals.set(ctx, await runtime.access.authenticate(credentials));
          return true;
        } catch (e) {
          if (e instanceof DomainError && e.code === "UNAUTHENTICATED") {
            socket.close(CloseCode.Unauthorized, `Unauthorized: ${e.message}`.slice(0, 120));
            return false;
          }
          if (e instanceof DomainError && e.code === "FORBIDDEN") return false; // graphql-ws closes with 4403
          log.error({ err: e }, "graphql-ws authentication failed");
          socket.close(CloseCode.InternalServerError, "Internal error");
          return false;
        }
      },
      onSubscribe: (ctx) => {
        // The new subscription is already counted. Each one holds a Redis listener and a replay: bounded per socket.
        const open = Object.keys(ctx.subscriptions).length;
        if (open > config.wsMaxSubscriptions) {
          return [new GraphQLError(`this connection already holds ${config.wsMaxSubscriptions} subscriptions, the most one connection may hold; complete one first or open another connection`, { extensions: { code: "RATE_LIMITED" } })];
        }
        return undefined;
      },
      context: (ctx) => {
        const requestId = randomUUID();
        return createContext(runtime, {}, log.child({ reqId: requestId, transport: "ws" }), requestId, socketPrincipals.get(ctx));
      },
      onNext: (_ctx, _id, _payload, _args, result) => {
        const r = result as ExecutionResult;
        if (!r.errors?.length) return undefined;
        return { ...r, errors: r.errors.map((e) => formatError(e.toJSON(), e)) } as unknown as typeof result;
      },
      onError: (_ctx, _id, _payload, errors) => errors.map((e) => formatError(e.toJSON(), e)) as never,
    },
    wss,
  );

  const apollo = new ApolloServer<GraphQLContext>({
    schema,
    introspection: true,
    includeStacktraceInErrorResponses: false,
    formatError: formatHttpError,
    // The process owns signal handling and the shutdown order (see close() below).
    stopOnTerminationSignals: false,
    plugins: [
      ApolloServerPluginLandingPageDisabled(),
      {
        async requestDidStart() {
          return {
            async didEncounterErrors(rc) {
              for (const err of rc.errors) {
                const outage = asDependencyOutage(err.originalError);
                if (outage) rc.contextValue.log.warn({ err: err.originalError }, outage.message);
                else if (!isExpectedGraphQLError(err)) rc.contextValue.log.error({ err: err.originalError ?? err }, "unhandled error in a GraphQL operation");
              }
            },
            async willSendResponse(rc) {
              const type = rc.operation?.operation ?? "unknown";
              const outcome = rc.response.body.kind === "single" && rc.response.body.singleResult.errors?.length ? "error" : "ok";
              runtime.metrics.graphqlOperations.inc({ type, outcome });
            },
          };
        },
      },
    ],
  });
  await apollo.start();
  await app.register(fastifyApollo(apollo), {
    path: "/graphql",
    method: ["GET", "POST"],
    context: async (request) => createContext(runtime, credentialsFromHeaders(request.headers), request.log, request.id),
  });

  let closed = false;
  return {
    app,
    async listen(port, host) {
      await app.listen({ port, host });
      const address = app.server.address();
      const actualPort = typeof address === "object" && address ? address.port : port;
      return `http://${host.includes(":") ? `[${host}]` : host}:${actualPort}`;
    },
    async close() {
      if (closed) return;
      closed = true;
      // 1. Subscriptions: graphql-ws closes every socket with 1001 (going away).
      await wsServer.dispose();
      wss.close();
      // 2. HTTP: stop accepting, let in-flight requests finish (idle keep-alives are closed at
      //    once); connections still busy after the grace period are cut.
      const cut = setTimeout(() => app.server.closeAllConnections(), Math.max(1000, config.shutdownTimeoutMs - 3000));
      cut.unref();
      await app.close();
      clearTimeout(cut);
      // 3. Apollo's own state.
      await apollo.stop().catch(() => undefined);
    },
  };
}
