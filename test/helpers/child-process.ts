import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface DiffgateProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout has matched `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
}

/** Runs src/main.ts as its own process (as `npm start` would, without the build step). */
export function spawnDiffgate(env: Record<string, string>): DiffgateProcess {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(DATABASE_URL|REDIS_URL|S3_|SAGEMAKER_|API_KEY|ROLE|PORT|DATA_DIR|QUEUE_PREFIX|AWS_ENDPOINT_URL)/.test(k)));
  const child = spawn(process.execPath, ["--openssl-legacy-provider", "--import", "@swc-node/register/esm-register", "src/main.ts"], {
    cwd: PROJECT_ROOT,
    env: { ...base, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  const waiters: Array<() => void> = [];
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString();
    for (const w of waiters.splice(0)) w();
  });
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => {
    done = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern}; stdout:\n${out}\nstderr:\n${err}`)), timeoutMs);
        const check = () => {
          const m = out.match(pattern);
          if (m) {
            clearTimeout(timer);
            resolve(m);
          } else if (done) {
            clearTimeout(timer);
            reject(new Error(`process exited before ${pattern}; stdout:\n${out}\nstderr:\n${err}`));
          } else waiters.push(check);
        };
        check();
      });
    },
    async stop(signal = "SIGTERM") {
      const started = Date.now();
      if (!done) child.kill(signal);
      const result = await exited;
      return { ...result, ms: Date.now() - started };
    },
  };
}

/**
 * A worker-only Diffgate process sharing a test stack's Postgres, Redis, store and emulator (its
 * `childEnv`), sending progress callbacks to the stack's API; it is added to `started` so the test
 * can kill what it started.
 */
export function spawnWorker(stack: { childEnv: Record<string, string>; baseUrl: string }, started: DiffgateProcess[]): DiffgateProcess {
  const w = spawnDiffgate({ ...stack.childEnv, ROLE: "worker", LOG_LEVEL: "warn", PUBLIC_URL: stack.baseUrl });
  started.push(w);
  return w;
}
