import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { startEmbeddedPostgres, type RunningPostgres } from "../src/local/embedded-postgres.js";
import { startEmbeddedRedis, type RunningRedis } from "../src/local/embedded-redis.js";

/**
 * Real services for the whole run: DATABASE_URL / REDIS_URL when set; otherwise the same embedded
 * defaults `npm start` uses (embedded Postgres; Redis on 6379 or redis-server from PATH). Each test
 * file then makes its own database and queue prefix inside them.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const log = pino({ level: "warn" });
  const dir = await mkdtemp(path.join(os.tmpdir(), "diffgate-services-"));
  let postgres: RunningPostgres | undefined;
  let redis: RunningRedis | undefined;
  if (!process.env.DATABASE_URL) {
    postgres = await startEmbeddedPostgres(dir, log);
    process.env.DATABASE_URL = postgres.url;
  }
  if (!process.env.REDIS_URL) {
    redis = await startEmbeddedRedis(dir, process.env.PATH, log);
    process.env.REDIS_URL = redis.url;
  }
  return async () => {
    await redis?.stop();
    await postgres?.stop();
    await rm(dir, { recursive: true, force: true });
  };
}
