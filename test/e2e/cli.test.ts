/*
 * The `diffgate` CLI. First its uploader and progress display alone (a fake fetch injects faults and
 * watches how bodies are streamed), then the real command, run from source as its own process
 * against a real stack (Postgres, Redis, s3rver, worker) and a loopback file source for imports.
 */
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { DiffgateClient } from "../../src/cli/api-client.js";
import { followUntilFinal } from "../../src/cli/follow.js";
import { renderBar, renderPlain, Progress } from "../../src/cli/progress.js";
import { run, type CliIO } from "../../src/cli/run.js";
import { planParts, uploadParts, type PartFetch, type PartRequestInit, type PartResponse } from "../../src/cli/uploader.js";
import { PROJECT_ROOT } from "../helpers/child-process.js";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";

const MiB = 1024 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "diffgate-cli-"));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function modelFile(name: string, size: number): Promise<{ file: string; bytes: Buffer }> {
  const bytes = randomBytes(size);
  const file = path.join(dir, name);
  await writeFile(file, bytes);
  return { file, bytes };
}

function response(status: number, headers: Record<string, string> = {}, body = ""): PartResponse {
  return { ok: status >= 200 && status < 300, status, headers: { get: (n) => headers[n.toLowerCase()] ?? null }, text: async () => body };
}

/** Reads a request body the way a connection would, chunk by chunk. */
async function drain(init: PartRequestInit, each?: (chunk: Uint8Array, index: number) => Promise<void> | void, limit = Infinity): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let received = 0;
  for await (const chunk of init.body) {
    await each?.(chunk, chunks.length);
    chunks.push(chunk);
    received += chunk.length;
    if (received >= limit) break;
  }
  return Buffer.concat(chunks);
}

const partOf = (url: string) => Number(new URL(url).searchParams.get("partNumber"));
const urlsFor = (n: number) => Array.from({ length: n }, (_, i) => `https://store.invalid/model?partNumber=${i + 1}&X-Amz-Signature=x`);

describe("part planning", () => {
  it("keeps the requested size within the store's limits", () => {
    expect(planParts(12 * MiB, 5 * MiB)).toEqual({ partSize: 5 * MiB, partsNumber: 3, adjustment: undefined });
    expect(planParts(12 * MiB, 64 * MiB)).toMatchObject({ partSize: 64 * MiB, partsNumber: 1 });
    // Below S3's 5 MiB minimum: raised.
    expect(planParts(12 * MiB, 1 * MiB)).toMatchObject({ partSize: 5 * MiB, partsNumber: 3, adjustment: expect.stringMatching(/5 MiB/) });
    // 100 GiB at 5 MiB would be 20480 parts: raised to whole MiB, at most 10000 parts.
    const big = planParts(100 * 1024 * MiB, 5 * MiB);
    expect(big.partsNumber).toBeLessThanOrEqual(10_000);
    expect(big.partSize % MiB).toBe(0);
    expect(big.adjustment).toMatch(/10000 parts/);
    expect(() => planParts(0, 5 * MiB)).toThrow(/empty/);
  });
});

describe("uploader (fake fetch)", () => {
  it("retries a part whose PUT fails once (an error status, a dropped connection) and sends the same bytes again", async () => {
    const { file, bytes } = await modelFile("retry.safetensors", 12 * MiB);
    const calls = new Map<number, number>();
    const received = new Map<number, Buffer>();
    const fakeFetch: PartFetch = async (url, init) => {
      const part = partOf(url);
      const attempt = (calls.get(part) ?? 0) + 1;
      calls.set(part, attempt);
      if (part === 2 && attempt === 1) {
        await drain(init, undefined, 2 * MiB); // half sent, then the store refuses
        return response(500, {}, "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>");
      }
      if (part === 3 && attempt === 1) {
        await drain(init, undefined, 1 * MiB);
        throw new TypeError("fetch failed", { cause: Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }) });
      }
      received.set(part, await drain(init));
      return response(200, { etag: `"etag-${part}"` });
    };
    let net = 0;
    let max = 0;
    const retries: Array<{ partNumber: number; attempt: number; reason: string }> = [];
    const tags = await uploadParts({
      path: file,
      fileSize: bytes.length,
      partSize: 5 * MiB,
      urls: urlsFor(3),
      concurrency: 3,
      fetch: fakeFetch,
      backoffMs: () => 5,
      onProgress: (d) => {
        net += d;
        max = Math.max(max, net);
      },
      onRetry: (r) => retries.push(r),
    });
    expect(tags).toEqual([1, 2, 3].map((n) => ({ ETag: `"etag-${n}"`, PartNumber: n })));
    expect(Object.fromEntries(calls)).toEqual({ 1: 1, 2: 2, 3: 2 });
    expect(retries.map((r) => [r.partNumber, r.attempt])).toEqual(expect.arrayContaining([[2, 1], [3, 1]]));
    expect(retries.find((r) => r.partNumber === 2)?.reason).toMatch(/HTTP 500 \(InternalError/);
    expect(retries.find((r) => r.partNumber === 3)?.reason).toMatch(/ECONNRESET/);
    // What the store got, part by part, is the file; progress took the failed attempts' bytes back.
    expect(sha256(Buffer.concat([1, 2, 3].map((n) => received.get(n)!)))).toBe(sha256(bytes));
    expect(net).toBe(bytes.length);
    expect(max).toBeLessThanOrEqual(bytes.length);
  });

  it("gives up on a part after 3 retries, and does not retry what a retry cannot fix", async () => {
    const { file, bytes } = await modelFile("gives-up.safetensors", 6 * MiB);
    let attempts = 0;
    const unavailable: PartFetch = async (url, init) => {
      await drain(init);
      if (partOf(url) === 2) return response(200, { etag: '"ok"' });
      attempts++;
      return response(503, {}, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>");
    };
    await expect(uploadParts({ path: file, fileSize: bytes.length, partSize: 5 * MiB, urls: urlsFor(2), concurrency: 2, fetch: unavailable, backoffMs: () => 1 })).rejects.toThrow(
      /^part 1 of 2 failed \(after 4 attempts\): HTTP 503 \(SlowDown: Please reduce your request rate\.\)$/,
    );
    expect(attempts).toBe(4);

    let forbidden = 0;
    const expired: PartFetch = async (_url, init) => {
      forbidden++;
      await drain(init);
      return response(403, {}, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>");
    };
    await expect(uploadParts({ path: file, fileSize: bytes.length, partSize: 5 * MiB, urls: urlsFor(2), concurrency: 1, fetch: expired, backoffMs: () => 1 })).rejects.toThrow(/part 1 of 2 failed: HTTP 403 \(AccessDenied: Request has expired\)/);
    // One attempt, and the first failure stopped the other part from starting.
    expect(forbidden).toBe(1);
  });

  it("streams each part from disk as the connection takes it, never the whole file", async () => {
    const { file, bytes } = await modelFile("streamed.safetensors", 12 * MiB);
    const marker = Buffer.from("written after the upload started");
    const markerAt = bytes.length - marker.length;
    const chunkSizes: number[] = [];
    const received = new Map<number, Buffer>();
    let readAhead = 0;
    let read = 0;
    let consumed = 0;
    const fakeFetch: PartFetch = async (url, init) => {
      // A stream, not a buffer of the part (let alone the file).
      expect(Buffer.isBuffer(init.body) || init.body instanceof Uint8Array || typeof init.body === "string").toBe(false);
      expect(typeof init.body[Symbol.asyncIterator]).toBe("function");
      // With "follow", Node's fetch would keep a copy of the whole streamed body in case of a redirect.
      expect(init.redirect).toBe("error");
      expect(init.headers["content-length"]).toBe(String(Math.min(5 * MiB, bytes.length - (partOf(url) - 1) * 5 * MiB)));
      const part = partOf(url);
      const body = await drain(init, async (chunk, index) => {
        chunkSizes.push(chunk.length);
        consumed += chunk.length;
        readAhead = Math.max(readAhead, read - consumed);
        if (part === 1 && index === 0) {
          // The last part has not been read yet, so what is on disk now is what gets sent.
          const handle = await open(file, "r+");
          await handle.write(marker, 0, marker.length, markerAt);
          await handle.close();
        }
      });
      received.set(part, body);
      return response(200, { etag: `"p${part}"` });
    };
    await uploadParts({ path: file, fileSize: bytes.length, partSize: 5 * MiB, urls: urlsFor(3), concurrency: 1, fetch: fakeFetch, readChunkBytes: 64 * 1024, onProgress: (d) => (read += d) });
    expect(Math.max(...chunkSizes)).toBeLessThanOrEqual(64 * 1024);
    expect(chunkSizes.length).toBeGreaterThanOrEqual((12 * MiB) / (64 * 1024));
    // Nothing is handed over ahead of the connection asking for it.
    expect(readAhead).toBeLessThanOrEqual(64 * 1024);
    const sent = Buffer.concat([1, 2, 3].map((n) => received.get(n)!));
    expect(sent.subarray(markerAt).toString()).toBe(marker.toString());
    expect(sha256(sent.subarray(0, markerAt))).toBe(sha256(bytes.subarray(0, markerAt)));
  });

  it("stops every part when cancelled", async () => {
    const { file, bytes } = await modelFile("cancelled.safetensors", 10 * MiB);
    const controller = new AbortController();
    let started = 0;
    const hanging: PartFetch = (_url, init) =>
      new Promise((_resolve, reject) => {
        started++;
        if (started === 2) setTimeout(() => controller.abort(new Error("interrupted")), 20);
        init.signal.addEventListener("abort", () => reject(init.signal.reason), { once: true });
      });
    await expect(uploadParts({ path: file, fileSize: bytes.length, partSize: 5 * MiB, urls: urlsFor(2), concurrency: 2, fetch: hanging, signal: controller.signal })).rejects.toThrow(/interrupted/);
  });
});

describe("progress display", () => {
  it("draws a bar with percentage and throughput on a terminal, plain lines otherwise", () => {
    const snapshot = { label: "model.safetensors", done: 54 * MiB, total: 120 * MiB, rate: 12_300_000, elapsedMs: 4_000 };
    const bar = renderBar(snapshot, 100);
    expect(bar).toMatch(/^model\.safetensors \[█+░+\]  45\.0%  54\.0\/120\.0 MiB  12\.3 MB\/s  ETA 0:06$/);
    expect(bar.length).toBeLessThanOrEqual(100);
    expect(renderBar(snapshot, 40).length).toBeLessThan(40);
    expect(renderPlain(snapshot)).toBe("model.safetensors: 45.0% (54.0/120.0 MiB), 12.3 MB/s, ETA 0:06");
    expect(renderPlain({ ...snapshot, total: undefined })).toBe("model.safetensors: 54.0 MiB, 12.3 MB/s");

    let t = 0;
    const out: string[] = [];
    const p = new Progress({ label: "f", total: 10 * MiB, stream: { isTTY: true, columns: 80, write: (s) => out.push(s) > 0 }, now: () => t });
    t = 1000;
    p.add(5 * MiB);
    p.note("a message");
    p.finish("done");
    const text = out.join("");
    expect(text).toContain("a message\n");
    expect(text).toMatch(/\r\u001b\[K|\rf \[/);
    expect(text).toMatch(/50\.0%.*5\.2 MB\/s/);
    expect(text.endsWith("done\n")).toBe(true);
  });

  it("prints a plain line every few seconds when stderr is not a terminal", () => {
    vi.useFakeTimers();
    try {
      const lines: string[] = [];
      let t = 0;
      const p = new Progress({ label: "f", total: 100 * MiB, stream: { isTTY: false, write: (s) => lines.push(s) > 0 }, now: () => t });
      for (let i = 1; i <= 12; i++) {
        t = i * 1000;
        p.add(MiB);
        vi.advanceTimersByTime(1000);
      }
      p.finish("done");
      expect(lines).toEqual([expect.stringMatching(/^f: 5\.0% \(5\.0\/100\.0 MiB\), 1\.0 MB\/s, ETA 1:3\d\n$/), expect.stringMatching(/^f: 10\.0% /), "done\n"]);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("memory", () => {
  // Linux only: the child's resident memory is read from /proc while it runs.
  it.skipIf(!existsSync("/proc/self/status"))("uploads a 1 GiB file in 256 MiB parts, 4 at a time, in bounded memory", async () => {
    const file = path.join(dir, "sparse.safetensors");
    const handle = await open(file, "w");
    await handle.truncate(1024 * MiB);
    await handle.close();
    // Diffgate and the store in one: discards the parts, counts the bytes.
    let received = 0;
    const server = createServer((req, res) => {
      req.on("data", (d: Buffer) => (received += req.url!.startsWith("/part") ? d.length : 0));
      req.on("end", () => {
        res.setHeader("content-type", "application/json");
        const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
        if (req.url!.startsWith("/part")) return res.writeHead(200, { etag: `"${req.url}"` }).end();
        if (req.method === "POST") return res.writeHead(201).end(JSON.stringify({ statusCode: 201, data: { checkpoint: { id: "mem", status: "Initial" }, s3PresignUrl: { "sparse.safetensors": [1, 2, 3, 4].map((n) => `${base}/part?partNumber=${n}`) } } }));
        res.end(JSON.stringify({ statusCode: 200, data: { checkpoint: { id: "mem", status: "Active" } } }));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const child = spawn(process.execPath, ["--import", "@swc-node/register/esm-register", "src/cli/diffgate.ts", "upload", file, "--type", "Lora", "--part-size-mb", "256", "--concurrency", "4"], {
        cwd: PROJECT_ROOT,
        env: { ...process.env, DIFFGATE_URL: base, DIFFGATE_API_KEY: "k" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let peakKiB = 0;
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const sampler = setInterval(() => {
        readFile(`/proc/${child.pid}/status`, "utf8")
          .then((status) => (peakKiB = Math.max(peakKiB, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0))))
          .catch(() => undefined);
      }, 25);
      const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
      clearInterval(sampler);
      expect(code, stderr).toBe(0);
      expect(received).toBe(1024 * MiB);
      // A whole part held per connection would be over 1 GiB; streaming stays near the runtime's own size.
      expect(peakKiB / 1024, stderr).toBeGreaterThan(0);
      expect(peakKiB / 1024).toBeLessThan(400);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

// ---------------------------------------------------------------------------------------- real stack

let stack: TestStack;
let source: Server;
let sourceUrl: string;
const importBytes = randomBytes(12 * MiB + 321);

/** /model.safetensors (paced: about 2.5 s, so the server reports progress), /dies.safetensors (stops halfway). */
function startSource(): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === "/model.safetensors") {
      res.writeHead(200, { "content-length": importBytes.length, "content-type": "application/octet-stream" });
      let offset = 0;
      const step = () => {
        if (res.destroyed) return;
        const chunk = importBytes.subarray(offset, offset + MiB);
        offset += chunk.length;
        if (offset >= importBytes.length) res.end(chunk);
        else res.write(chunk, () => setTimeout(step, 200));
      };
      step();
    } else if (req.url === "/dies.safetensors") {
      res.writeHead(200, { "content-length": 10 * MiB });
      res.write(importBytes.subarray(0, 2 * MiB), () => setTimeout(() => res.destroy(), 50));
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `diffgate` from source as its own process (stdin closed, stdout/stderr piped: not a terminal). */
function cli(args: string[], env: Record<string, string> = { DIFFGATE_URL: stack.baseUrl, DIFFGATE_API_KEY: stack.adminKey }): Promise<CliResult> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("DIFFGATE_")));
  const child = spawn(process.execPath, ["--import", "@swc-node/register/esm-register", "src/cli/diffgate.ts", ...args], { cwd: PROJECT_ROOT, env: { ...base, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), 50_000);
  return new Promise((resolve) =>
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** Runs the command in this process, with a fake terminal as stderr. */
async function cliInProcess(args: string[], deps: Parameters<typeof run>[2] = {}) {
  let stdout = "";
  let stderr = "";
  const io: CliIO = {
    stdout: { write: (s) => ((stdout += s), true) },
    stderr: { isTTY: true, columns: 120, write: (s) => ((stderr += s), true) },
    env: { DIFFGATE_URL: stack.baseUrl, DIFFGATE_API_KEY: stack.adminKey },
    signal: new AbortController().signal,
  };
  const code = await run(args, io, deps);
  return { code, stdout, stderr };
}

async function checkpoint(id: string) {
  const r = await gql(stack.baseUrl, `query($id: ID!) { checkpoint(id: $id) { status type message failureReason files { name key sizeBytes } } }`, { id }, { key: stack.adminKey });
  return r.body.data?.checkpoint as { status: string; type: string; message: string | null; failureReason: string | null; files: Array<{ name: string; key: string; sizeBytes: number | null }> } | undefined;
}

async function storedSha(key: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of await stack.runtime.storage.getObjectStream(key)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

describe("diffgate against a real stack", () => {
  beforeAll(async () => {
    source = await startSource();
    const port = (source.address() as AddressInfo).port;
    sourceUrl = `http://127.0.0.1:${port}`;
    stack = await startTestStack({ worker: true, env: { IMPORT_ALLOW_PRIVATE_HOSTS: `127.0.0.1:${port}`, IMPORT_PART_SIZE_MB: "5" } });
  });
  afterAll(async () => {
    await stack?.close();
    await new Promise((r) => source?.close(r));
  });

  it("uploads a 12 MiB file in 5 MiB parts: prints only the id, the checkpoint is Active, the stored object is byte-identical", async () => {
    const { file, bytes } = await modelFile("cli-upload.safetensors", 12 * MiB);
    const r = await cli(["upload", file, "--type", "Lora", "--part-size-mb", "5", "--concurrency", "2", "--message", "from the cli"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^[0-9a-f-]{36}\n$/);
    const id = r.stdout.trim();
    expect(id).toMatch(UUID);
    expect(r.stderr).toContain(`Uploading cli-upload.safetensors (12.0 MiB, 3 parts of 5 MiB, 2 at a time) as Lora checkpoint ${id}`);
    expect(r.stderr).toMatch(/Uploaded 12\.0 MiB in \d+\.\d s \(\d+\.\d MB\/s\); completing\n/);
    expect(r.stderr).not.toContain(stack.adminKey);

    const c = await checkpoint(id);
    expect(c).toMatchObject({ status: "Active", type: "Lora", message: "from the cli", files: [{ name: "cli-upload.safetensors", sizeBytes: bytes.length }] });
    expect(c!.files[0]!.key).toBe(`Lora/checkpoint/custom/${id}/cli-upload.safetensors`);
    expect(await storedSha(c!.files[0]!.key)).toBe(sha256(bytes));
  });

  it("prints the server's message when it refuses, e.g. a name already taken", async () => {
    const { file } = await modelFile("cli-upload.safetensors", 6 * MiB);
    const r = await cli(["upload", file, "--type", "lora"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^diffgate: could not start the upload: HTTP 409: cli-upload\.safetensors already exists for type Lora/);

    const wrongKey = await cli(["upload", file, "--type", "VAE"], { DIFFGATE_URL: stack.baseUrl, DIFFGATE_API_KEY: "not-a-key-123" });
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toMatch(/^diffgate: could not start the upload: HTTP 403: the API key is not valid/);
    expect(wrongKey.stderr).not.toContain("not-a-key-123");
  });

  it("retries a part PUT that fails once against the real store, and removes the checkpoint when a part fails for good", async () => {
    const { file, bytes } = await modelFile("flaky.safetensors", 11 * MiB);
    const seen = new Set<string>();
    const flaky: PartFetch = async (url, init) => {
      if (partOf(url) === 2 && !seen.has(url)) {
        seen.add(url);
        await drain(init, undefined, MiB);
        throw new TypeError("fetch failed", { cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }) });
      }
      return fetch(url, { ...init, body: init.body as unknown as NonNullable<RequestInit["body"]> });
    };
    const ok = await cliInProcess(["upload", file, "--type", "Stable-diffusion", "--part-size-mb", "5"], { partFetch: flaky, retryBackoffMs: () => 10 });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/Part 2: read ECONNRESET; retry 1 of 3 in 0\.0 s/);
    expect(ok.stderr).toMatch(/\[█+\]\s+100\.0%  11\.0\/11\.0 MiB  \d+\.\d MB\/s/);
    const c = await checkpoint(ok.stdout.trim());
    expect(c?.status).toBe("Active");
    expect(await storedSha(c!.files[0]!.key)).toBe(sha256(bytes));

    // Every attempt of part 1 refused: exit 1 and no checkpoint left holding the name.
    const { file: other } = await modelFile("refused.safetensors", 6 * MiB);
    const refusing: PartFetch = async (url, init) => (partOf(url) === 1 ? (await drain(init), response(403, {}, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")) : fetch(url, { ...init, body: init.body as unknown as NonNullable<RequestInit["body"]> }));
    const failed = await cliInProcess(["upload", other, "--type", "VAE", "--part-size-mb", "5"], { partFetch: refusing });
    expect(failed.code).toBe(1);
    expect(failed.stdout).toBe("");
    expect(failed.stderr).toMatch(/diffgate: upload failed: part 1 of 2 failed: HTTP 403 \(AccessDenied: Request has expired\)/);
    expect(failed.stderr).toMatch(/Removed the unfinished checkpoint/);
    const rows: Array<{ n: number }> = await stack.runtime.db.query(`SELECT count(*)::int AS n FROM checkpoint_files WHERE name = 'refused.safetensors'`);
    expect(rows[0]!.n).toBe(0);
  });

  it("imports a URL, follows its progress over graphql-ws, prints the id once Active", async () => {
    const r = await cli(["import", `${sourceUrl}/model.safetensors`, "--type", "Stable-diffusion", "--message", "imported by the cli"]);
    expect(r.code, r.stderr).toBe(0);
    const id = r.stdout.trim();
    expect(r.stdout).toBe(`${id}\n`);
    expect(id).toMatch(UUID);
    expect(r.stderr).toContain(`Importing ${sourceUrl}/model.safetensors as Stable-diffusion checkpoint ${id}`);
    expect(r.stderr).toMatch(new RegExp(`Imported 12\\.0 MiB in \\d+\\.\\d s; checkpoint ${id} is Active\\.`));
    expect(r.stderr).not.toMatch(/polling/);
    const c = await checkpoint(id);
    expect(c).toMatchObject({ status: "Active", message: "imported by the cli", files: [{ name: "model.safetensors", sizeBytes: importBytes.length }] });
    expect(await storedSha(c!.files[0]!.key)).toBe(sha256(importBytes));
  });

  it("shows the import's progress bar from the progress events", async () => {
    const name = `${sourceUrl}/model.safetensors`;
    // The same URL again would take the same name: import it as another type.
    const r = await cliInProcess(["import", name, "--type", "VAE"]);
    expect(r.code, r.stderr).toBe(0);
    // At least one bar drawn mid-way (the paced source makes the server report parts as they land) and the final one.
    expect(r.stderr).toMatch(/model\.safetensors \[█*░+\]\s+\d+\.\d%  \d+\.\d\/12\.0 MiB/);
    expect(r.stderr).toMatch(/model\.safetensors \[█+\]\s+100\.0%  12\.0\/12\.0 MiB  \d+\.\d MB\/s/);
  });

  it("falls back to polling when the WebSocket cannot be used, and stops at once when it refuses the credentials", async () => {
    const created = await rest(stack.baseUrl, "POST", "/checkpoints", { key: stack.adminKey, body: { checkpoint_type: "ControlNet", urls: [`${sourceUrl}/model.safetensors`] } });
    const id: string = created.body.data.checkpoint.id;
    class NoWebSocket extends DiffgateClient {
      override get wsUrl() {
        return "ws://127.0.0.1:9/graphql";
      }
    }
    const notes: string[] = [];
    const final = await followUntilFinal({ api: new NoWebSocket({ baseUrl: stack.baseUrl, apiKey: stack.adminKey }), apiKey: stack.adminKey, id, onNote: (n) => notes.push(n), pollIntervalMs: 200 });
    expect(final).toEqual({ status: "Active" });
    expect(notes).toEqual([expect.stringMatching(/^cannot follow events over WebSocket \(.*\); polling the status instead$/)]);

    const refused = followUntilFinal({ api: new DiffgateClient({ baseUrl: stack.baseUrl, apiKey: stack.adminKey }), apiKey: "not-a-key-456", id, onNote: (n) => notes.push(n) });
    await expect(refused).rejects.toThrow(/the event stream closed \(44\d\d/);
    expect(notes).toHaveLength(1);
  });

  it("exits 1 with the failure reason when the import's source dies", async () => {
    const r = await cli(["import", `${sourceUrl}/dies.safetensors`, "--type", "Lora"]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    const id = /checkpoint ([0-9a-f-]{36}) Failed/.exec(r.stderr)?.[1];
    expect(id, r.stderr).toBeDefined();
    const c = await checkpoint(id!);
    expect(c?.status).toBe("Failed");
    expect(r.stderr).toContain(`diffgate: checkpoint ${id} Failed: ${c!.failureReason}`);
    expect(c!.failureReason).toMatch(/^import failed: /);
  });

  it("exits 2 with the usage on bad usage, 0 on --help", async () => {
    const { file } = await modelFile("usage.safetensors", 1024);
    const cases: Array<[string[], RegExp]> = [
      [["upload", file, "--type", "Painting"], /--type: unknown checkpoint type "Painting"; use one of Stable-diffusion, embeddings, Lora/],
      [["upload", "--type", "Lora"], /missing <file>/],
      [["upload", path.join(dir, "absent.safetensors"), "--type", "Lora"], /absent\.safetensors: no such file/],
      [["upload", file], /--type is required/],
      [["upload", file, "--type", "Lora", "--part-size-mb", "lots"], /--part-size-mb: "lots" is not a positive number/],
      [["import", "ftp://example.com/a.safetensors", "--type", "Lora"], /not an http or https URL/],
      [["upload", file, "--type", "Lora", "--colour"], /Unknown option '--colour'/],
      [["frobnicate"], /unknown command "frobnicate"/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((r, i) => {
      const [args, message] = cases[i]!;
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stdout, args.join(" ")).toBe("");
      expect(r.stderr, args.join(" ")).toMatch(message);
      expect(r.stderr, args.join(" ")).toMatch(/Usage: diffgate/);
    });
    const noKey = await cli(["import", `${sourceUrl}/model.safetensors`, "--type", "Lora"], { DIFFGATE_URL: stack.baseUrl });
    expect(noKey.code).toBe(2);
    expect(noKey.stderr).toMatch(/no API key: pass --api-key or set DIFFGATE_API_KEY/);

    const help = await cli(["upload", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: diffgate upload <file> --type <Stable-diffusion\|embeddings\|Lora\|hypernetworks\|ControlNet\|VAE>/);
    expect(help.stdout).toMatch(/--part-size-mb/);
  });
});
