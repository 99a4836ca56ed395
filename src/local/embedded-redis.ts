import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import type { Logger } from "pino";
import { freePort } from "./free-port.js";

export interface RunningRedis {
  url: string;
  /** Whether we started it (and so must stop it). */
  owned: boolean;
  stop(): Promise<void>;
}

export class RedisUnavailableError extends Error {}

/** True when something on host:port answers a Redis PING. */
export function redisAnswers(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    let reply = "";
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.on("error", () => done(false));
    socket.on("connect", () => socket.write("PING\r\n"));
    socket.on("data", (chunk) => {
      reply += chunk.toString("latin1");
      if (reply.includes("\r\n")) done(reply.startsWith("+PONG") || reply.startsWith("-NOAUTH"));
    });
  });
}

/** The first executable `binary` in the directories of `envPath` (a PATH value). */
export function findOnPath(binary: string, envPath: string | undefined): string | undefined {
  for (const dir of (envPath ?? "").split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(dir, binary);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  return undefined;
}

/** Redis on 127.0.0.1:6379 if one answers; else redis-server from PATH with its data (AOF) in DATA_DIR/redis. */
export async function startEmbeddedRedis(dataDir: string, envPath: string | undefined, log: Logger): Promise<RunningRedis> {
  if (await redisAnswers("127.0.0.1", 6379)) {
    return { url: "redis://127.0.0.1:6379", owned: false, stop: async () => undefined };
  }
  const binary = findOnPath("redis-server", envPath);
  if (!binary) {
    throw new RedisUnavailableError(
      "No Redis answers on 127.0.0.1:6379 and no redis-server is on PATH. Install one (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set REDIS_URL.",
    );
  }
  const dir = path.join(dataDir, "redis");
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const child: ChildProcess = spawn(
    binary,
    ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--save", "", "--daemonize", "no", "--loglevel", "warning"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let exited = false;
  child.on("exit", () => (exited = true));
  child.stderr?.on("data", (d: Buffer) => log.warn({ component: "embedded-redis" }, d.toString().trim()));
  child.stdout?.on("data", (d: Buffer) => log.debug({ component: "embedded-redis" }, d.toString().trim()));
  for (let i = 0; i < 100; i++) {
    if (exited) throw new RedisUnavailableError(`redis-server (${binary}) exited at start; see the log above`);
    if (await redisAnswers("127.0.0.1", port, 200)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  log.info({ port, dir }, "started redis-server from PATH");
  return {
    url: `redis://127.0.0.1:${port}`,
    owned: true,
    stop: () =>
      new Promise<void>((resolve) => {
        if (exited) return resolve();
        const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
        child.once("exit", () => {
          clearTimeout(timer);
          resolve();
        });
        child.kill("SIGTERM"); // redis-server flushes the AOF and exits
      }),
  };
}
