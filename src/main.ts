import "reflect-metadata";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { pino } from "pino";
import { ConfigError, loadConfig, type Config } from "./config.js";
import { createHttpServer, type HttpServer } from "./http-server.js";
import { startDependencies, type StartedDependencies } from "./local/embedded-dependencies.js";
import { RedisUnavailableError } from "./local/embedded-redis.js";
import { Runtime } from "./runtime.js";

const ADMIN_KEY_FILE = "admin-api-key";

function createLogger(config: Config) {
  return pino({
    level: config.logLevel,
    base: { role: config.role },
    redact: { paths: ["req.headers.authorization", 'req.headers["x-api-key"]', "apiKey", "password", "token"], censor: "[redacted]" },
  });
}

async function writeAdminKey(dataDir: string, key: string): Promise<string> {
  await mkdir(dataDir, { recursive: true });
  const file = path.join(dataDir, ADMIN_KEY_FILE);
  await writeFile(file, `${key}\n`, { mode: 0o600, flag: "w" });
  await chmod(file, 0o600);
  return file;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`diffgate: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const log = createLogger(config);

  let dependencies: StartedDependencies;
  try {
    dependencies = await startDependencies(config, process.env.PATH, log);
  } catch (e) {
    if (e instanceof RedisUnavailableError) {
      process.stderr.write(`diffgate: ${e.message}\n`);
      process.exit(3);
    }
    throw e;
  }

  const runtime = new Runtime(config, dependencies.deps, log);
  let http: HttpServer | undefined;
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return log.info({ signal }, "already shutting down");
    stopping = true;
    log.info({ signal }, "shutting down");
    const deadline = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      process.exit(1);
    }, config.shutdownTimeoutMs);
    deadline.unref();
    try {
      await http?.close();
      await runtime.close();
      await dependencies.stop();
      clearTimeout(deadline);
      log.info("stopped");
      process.exit(0);
    } catch (err) {
      log.error({ err }, "shutdown failed");
      process.exit(1);
    }
  };
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(signal, () => void shutdown(signal));

  try {
    const outcome = await runtime.start();
    if (outcome.appliedMigrations.length) log.info({ migrations: outcome.appliedMigrations }, "applied migrations");

    const banner: string[] = ["", `Diffgate (role ${config.role})`, ...dependencies.notes.map((n) => `  ${n}`)];
    if (outcome.generatedApiKey) {
      const file = await writeAdminKey(config.dataDir, outcome.generatedApiKey);
      banner.push(`  admin API key (shown once; also saved to ${file}, mode 0600):`, `    ${outcome.generatedApiKey}`);
    } else if (config.apiKey) {
      banner.push("  admin API key: the API_KEY you configured");
    } else {
      banner.push(`  admin API key: in ${path.join(config.dataDir, ADMIN_KEY_FILE)} (written at first start)`);
    }

    if (config.role !== "api") await runtime.startWorker();
    if (config.role !== "worker") {
      http = await createHttpServer(runtime);
      const base = await http.listen(config.port, config.host);
      // Progress callbacks go where this process really listens (PORT=0 picks a free port).
      if (!config.inferences.publicUrlConfigured) runtime.inferences.setPublicUrl(base);
      banner.push(`  REST:     ${base}/${config.restPrefix ? `  and  ${base}${config.restPrefix}/` : ""}`);
      banner.push(`  GraphQL:  ${base}/graphql  (subscriptions: ${base.replace(/^http/, "ws")}/graphql)`);
      if (config.graphiql) banner.push(`  GraphiQL: ${base}/graphiql`);
      banner.push(`  health:   ${base}/healthz  ${base}/readyz  ${base}/metrics`);
    } else {
      banner.push(`  worker: ${config.workerConcurrency} concurrent jobs, ${config.webUiWorkerConcurrency} WebUI runs`);
    }
    process.stdout.write(`${banner.join("\n")}\n\n`);
  } catch (err) {
    log.fatal({ err }, "start failed");
    await http?.close().catch(() => undefined);
    await runtime.close().catch(() => undefined);
    await dependencies.stop().catch(() => undefined);
    process.exit(1);
  }
}

await main();
