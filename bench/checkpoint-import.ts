/**
 * Checkpoint import from a URL: its throughput next to curl's for the same URL, and the memory it
 * takes, measured in one run:
 *
 *   source    a loopback node:http server in a child process (so that its CPU and memory are not
 *             Diffgate's) serving GET /gen/<bytes>/<name>: <bytes> pseudo-random bytes with a
 *             Content-Length, a block from a seeded xorshift128 PRNG repeated (its length is not a
 *             multiple of any part size, so no two parts are alike), nothing on disk
 *   baseline  curl -s -o /dev/null of the same URL (from this process's PATH; when there is no curl,
 *             a fetch in this process that reads the body and drops it, and the results say so)
 *   import    POST /graphql importCheckpoint with the source's URL, then checkpoint(id) polled every
 *             50 ms until Active: time from sending the mutation to seeing Active; throughout it,
 *             process.memoryUsage() every 100 ms and, on Linux, the kernel's peak RSS (VmHWM, reset
 *             through /proc/self/clear_refs before each import)
 *
 * Diffgate starts in this process on the embedded defaults (see bench/bench-stack.ts), with
 * IMPORT_ALLOW_PRIVATE_HOSTS set to the source's 127.0.0.1:<port>: its worker, its HTTP server and
 * the embedded object store (s3rver, files under DATA_DIR/s3) all run here, so this process's RSS is
 * Diffgate's (the bench adds only the poll and the sampler). The embedded Postgres and Redis are
 * processes of their own and are not counted. S3_BUCKET must be unset (the bench writes gigabytes),
 * and ROLE must be all (the bench needs the worker). IMPORT_PART_SIZE_MB and IMPORT_CONCURRENCY are
 * taken from the environment, as Diffgate takes them.
 *
 * After one unmeasured 32 MiB warm-up import, each size is imported once, in the order given; each
 * checkpoint is read back and compared (SHA-256) with what the source sent, then deleted with
 * DELETE /checkpoints before the next size, so that DATA_DIR holds one object at a time.
 *
 * Env: BENCH_IMPORT_SIZES_MIB (default "256,1024,2048"), the sizes in MiB, comma-separated;
 *      BENCH_IMPORT_VERIFY (default 1; 0 skips the read-back comparison).
 * Output: a table on stdout and bench/results/checkpoint-import.json. MB/s are 10^6 bytes a second;
 * memory is in MiB.
 * Exit status: 0 when every import reached Active with the source's bytes (the memory target is
 * reported, not enforced), 1 otherwise or on failure, 2 on bad settings (or too little free disk),
 * 3 when no Redis is available, 130 when interrupted (SIGINT or SIGTERM).
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdir, readdir, stat, statfs, writeFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { findOnPath } from "../src/local/embedded-redis.js";
import { BenchRun, UsageError, environment, graphql, isRecord, packageRoot, ratio, runBench, startDiffgate } from "./bench-stack.js";

const MiB = 1024 * 1024;
const MB = 1e6;
const DEFAULT_SIZES_MIB = [256, 1024, 2048];
const MAX_SIZE_MIB = 64 * 1024;
const WARMUP_MIB = 32;
const SAMPLE_MS = 100;
const POLL_MS = 50;
/** The memory target of the issue: peak RSS under this, and flat across sizes. */
const TARGET_PEAK_RSS_MIB = 256;
/** Peaks across sizes count as flat when they differ by at most this much (or two import parts, if more). */
const FLAT_TOLERANCE_MIB = 32;
/** Free disk wanted beyond twice the largest size (s3rver keeps the parts until it has concatenated them). */
const DISK_MARGIN_BYTES = 512 * MiB;
const CHECKPOINT_TYPE = "Stable-diffusion";
const SOURCE_ARG = "--checkpoint-import-source";

// ------------------------------------------------------------------ the source (child process)

/** 4 MiB + 4099 bytes: a period that no part size (whole MiB) is a multiple of. */
const BLOCK_BYTES = 4 * MiB + 4099;
const WRITE_CHUNK_BYTES = 256 * 1024;
const SEED: readonly [number, number, number, number] = [0x9e3779b9, 0x243f6a88, 0xb7e15162, 0xdeadbeef];

/** BLOCK_BYTES from xorshift128 with a fixed seed: the same bytes in every run. */
function patternBlock(): Buffer {
  const words = new Uint32Array(Math.ceil(BLOCK_BYTES / 4));
  let [x, y, z, w] = SEED;
  for (let i = 0; i < words.length; i++) {
    const t = (x ^ (x << 11)) >>> 0;
    x = y;
    y = z;
    z = w;
    w = (w ^ (w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    words[i] = w;
  }
  return Buffer.from(words.buffer, 0, BLOCK_BYTES);
}

/** The first `bytes` bytes of the endless repetition of `block`, as views of it (nothing copied). */
function* pattern(block: Buffer, bytes: number): Generator<Buffer> {
  let sent = 0;
  let pos = 0;
  while (sent < bytes) {
    const n = Math.min(WRITE_CHUNK_BYTES, bytes - sent, block.length - pos);
    yield block.subarray(pos, pos + n);
    sent += n;
    pos = (pos + n) % block.length;
  }
}

type SourceRequest = { type: "sha256"; id: number; bytes: number };
type SourceMessage = { type: "listening"; port: number } | { type: "sha256"; id: number; hex: string };

function runSource(): void {
  const block = patternBlock();
  const server = http.createServer((req, res) => {
    const match = /^\/gen\/(\d{1,15})\/[^/]+$/.exec(req.url ?? "");
    const bytes = match ? Number(match[1]) : Number.NaN;
    if (!match || !Number.isSafeInteger(bytes) || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "content-length": 0 }).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    const chunks = pattern(block, bytes);
    const pump = () => {
      for (;;) {
        if (res.destroyed) return;
        const next = chunks.next();
        if (next.done) {
          res.end();
          return;
        }
        if (!res.write(next.value)) {
          res.once("drain", pump);
          return;
        }
      }
    };
    pump();
  });
  server.listen(0, "127.0.0.1", () => {
    const message: SourceMessage = { type: "listening", port: (server.address() as AddressInfo).port };
    process.send?.(message);
  });
  process.on("message", (raw: SourceRequest) => {
    if (raw?.type !== "sha256") return;
    const hash = createHash("sha256");
    for (const chunk of pattern(block, raw.bytes)) hash.update(chunk);
    const message: SourceMessage = { type: "sha256", id: raw.id, hex: hash.digest("hex") };
    process.send?.(message);
  });
  // The bench went away (or closes the channel to stop us): stop serving.
  process.once("disconnect", () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
  process.once("SIGTERM", () => process.exit(0));
  process.once("SIGINT", () => process.exit(0));
}

interface Source {
  port: number;
  pid: number | undefined;
  url(bytes: number, name: string): string;
  /** SHA-256 of the first `bytes` bytes the source serves (computed in the child). */
  sha256(bytes: number): Promise<string>;
}

/** Forks this module as the source; registers its stop as a cleanup. */
async function startSource(run: BenchRun): Promise<Source> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [SOURCE_ARG], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  run.cleanup("stopping the source", () => stopChild(child));
  const waiting = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  const exited = new Promise<never>((_resolve, reject) => {
    child.once("exit", (code, signal) => {
      const e = new Error(`the source process exited (${signal ?? `code ${code}`})`);
      for (const w of waiting.values()) w.reject(e);
      waiting.clear();
      reject(e);
    });
  });
  exited.catch(() => undefined);
  child.on("message", (m: SourceMessage) => {
    if (m.type !== "sha256") return;
    waiting.get(m.id)?.resolve(m.hex);
    waiting.delete(m.id);
  });
  const port = await Promise.race([
    exited,
    new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the source process did not listen within 10 s")), 10_000);
      child.on("message", (m: SourceMessage) => {
        if (m.type !== "listening") return;
        clearTimeout(timer);
        resolve(m.port);
      });
    }),
  ]);
  return {
    port,
    pid: child.pid,
    url: (bytes, name) => `http://127.0.0.1:${port}/gen/${bytes}/${encodeURIComponent(name)}`,
    sha256: (bytes) =>
      new Promise<string>((resolve, reject) => {
        const id = nextId++;
        waiting.set(id, { resolve, reject });
        const request: SourceRequest = { type: "sha256", id, bytes };
        child.send(request);
      }),
  };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      resolve();
    }, 5_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

// ------------------------------------------------------------------ the baseline

interface Baseline {
  bytes: number;
  seconds: number;
  mbPerSecond: number;
}


/** curl -s -o /dev/null; rejects unless it exits 0 with HTTP 200 and all the bytes. */
function curlDownload(curl: string, url: string, bytes: number, signal: AbortSignal): Promise<Baseline> {
  return new Promise((resolve, reject) => {
    const child = spawn(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}", url], { stdio: ["ignore", "pipe", "pipe"], signal });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => void (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => void (err += d.toString()));
    child.once("error", reject);
    child.once("close", (code) => {
      const [status, size, total] = out.trim().split(/\s+/);
      const seconds = Number(total);
      if (code !== 0 || status !== "200" || Number(size) !== bytes || !(seconds > 0)) {
        reject(new Error(`curl ${url} exited ${code} with ${JSON.stringify(out.trim())}${err ? `: ${err.trim().slice(0, 300)}` : ""}`));
        return;
      }
      resolve({ bytes, seconds, mbPerSecond: bytes / MB / seconds });
    });
  });
}

/** When there is no curl: fetch in this process, reading the body and dropping it. */
async function fetchDownload(url: string, bytes: number, signal: AbortSignal): Promise<Baseline> {
  const started = performance.now();
  const response = await fetch(url, { signal });
  if (response.status !== 200 || !response.body) throw new Error(`GET ${url} answered ${response.status}`);
  let received = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    received += value.byteLength;
  }
  const seconds = (performance.now() - started) / 1000;
  if (received !== bytes) throw new Error(`GET ${url} gave ${received} of ${bytes} bytes`);
  return { bytes, seconds, mbPerSecond: bytes / MB / seconds };
}

// ------------------------------------------------------------------ memory

interface MemoryPeaks {
  rssMiB: number;
  heapUsedMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
}

const toMiB = (bytes: number) => Math.round((bytes / MiB) * 10) / 10;

/** process.memoryUsage() every SAMPLE_MS while running; peaks and the RSS series. */
class MemorySampler {
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = performance.now();
  private lastAt = this.startedAt;
  readonly peaks: MemoryPeaks = { rssMiB: 0, heapUsedMiB: 0, externalMiB: 0, arrayBuffersMiB: 0 };
  /** [ms since start, RSS MiB] */
  readonly rssSeries: Array<[number, number]> = [];
  samples = 0;
  /** The longest time between two samples (the sampler shares the event loop with Diffgate). */
  maxGapMs = 0;

  constructor() {
    this.sample();
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  private sample(): void {
    const now = performance.now();
    const m = process.memoryUsage();
    this.samples++;
    this.maxGapMs = Math.max(this.maxGapMs, now - this.lastAt);
    this.lastAt = now;
    this.peaks.rssMiB = Math.max(this.peaks.rssMiB, toMiB(m.rss));
    this.peaks.heapUsedMiB = Math.max(this.peaks.heapUsedMiB, toMiB(m.heapUsed));
    this.peaks.externalMiB = Math.max(this.peaks.externalMiB, toMiB(m.external));
    this.peaks.arrayBuffersMiB = Math.max(this.peaks.arrayBuffersMiB, toMiB(m.arrayBuffers));
    this.rssSeries.push([Math.round(now - this.startedAt), toMiB(m.rss)]);
  }

  stop(): this {
    if (this.timer) {
      this.sample();
      clearInterval(this.timer);
      this.timer = undefined;
    }
    return this;
  }
}

/** Linux: the kernel's peak RSS of this process, resettable. Undefined elsewhere (or when refused). */
const kernelPeak = {
  reset(): boolean {
    try {
      writeFileSync("/proc/self/clear_refs", "5");
      return true;
    } catch {
      return false;
    }
  },
  readMiB(): number | undefined {
    try {
      const kb = /^VmHWM:\s+(\d+)\s+kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
      return kb === undefined ? undefined : toMiB(Number(kb) * 1024);
    } catch {
      return undefined;
    }
  },
};

async function idleMemory(ms: number): Promise<{ rssMiB: number; heapUsedMiB: number; externalMiB: number; arrayBuffersMiB: number }> {
  const sampler = new MemorySampler();
  await new Promise((r) => setTimeout(r, ms));
  sampler.stop();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const m = process.memoryUsage();
  return { rssMiB: median(sampler.rssSeries.map(([, v]) => v)), heapUsedMiB: toMiB(m.heapUsed), externalMiB: toMiB(m.external), arrayBuffersMiB: toMiB(m.arrayBuffers) };
}

// ------------------------------------------------------------------ S3 requests, as the SDK makes them

interface S3Call {
  command: string;
  startMs: number;
  ms: number;
  ok: boolean;
}

interface S3Summary {
  /** Per command: how many, their total and longest time. */
  commands: Record<string, { n: number; totalMs: number; maxMs: number }>;
  /** The most UploadPart requests in flight at once. */
  maxUploadPartsInFlight: number;
  completeMultipartUploadMs?: number;
}

function summarizeS3(calls: S3Call[]): S3Summary {
  const commands: S3Summary["commands"] = {};
  for (const c of calls) {
    const s = (commands[c.command] ??= { n: 0, totalMs: 0, maxMs: 0 });
    s.n++;
    s.totalMs += c.ms;
    s.maxMs = Math.max(s.maxMs, c.ms);
  }
  for (const s of Object.values(commands)) {
    s.totalMs = Math.round(s.totalMs);
    s.maxMs = Math.round(s.maxMs);
  }
  const edges = calls.filter((c) => c.command === "UploadPartCommand").flatMap((c) => [[c.startMs, 1] as const, [c.startMs + c.ms, -1] as const]);
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let inFlight = 0;
  let maxUploadPartsInFlight = 0;
  for (const [, d] of edges) maxUploadPartsInFlight = Math.max(maxUploadPartsInFlight, (inFlight += d));
  const complete = calls.find((c) => c.command === "CompleteMultipartUploadCommand");
  return { commands, maxUploadPartsInFlight, ...(complete ? { completeMultipartUploadMs: Math.round(complete.ms) } : {}) };
}

// ------------------------------------------------------------------ Diffgate's API


const IMPORT = `mutation($input: ImportCheckpointInput!) { importCheckpoint(input: $input) { id status } }`;
const CHECKPOINT = `query($id: ID!) { checkpoint(id: $id) { status failureReason files { name key sizeBytes } } }`;

/** DELETE /checkpoints (the REST route; it answers 204). */
async function deleteCheckpoints(baseUrl: string, apiKey: string, ids: string[]): Promise<void> {
  const response = await fetch(`${baseUrl}/checkpoints`, {
    method: "DELETE",
    headers: { "content-type": "application/json", "x-api-key": apiKey },
    body: JSON.stringify({ checkpoint_id_list: ids }),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await response.text();
  if (response.status !== 204 && response.status !== 200) throw new Error(`DELETE /checkpoints answered ${response.status}: ${text.slice(0, 300)}`);
}

/** Total bytes of the files under `dir` (0 when it does not exist). */
async function directoryBytes(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(dir, { recursive: true });
  } catch {
    return 0;
  }
  let total = 0;
  for (const name of names) {
    const s = await stat(path.join(dir, name)).catch(() => undefined);
    if (s?.isFile()) total += s.size;
  }
  return total;
}

async function freeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

// ------------------------------------------------------------------ one import

interface ImportReport {
  sizeMiB: number;
  bytes: number;
  checkpointId?: string;
  ok: boolean;
  problem?: string;
  baseline?: Baseline;
  /** From sending importCheckpoint to seeing Active (poll every POLL_MS). */
  seconds?: number;
  mbPerSecond?: number;
  ratioToBaseline?: number;
  /**
   * Without the CompleteMultipartUpload request: with the embedded s3rver that request re-reads and
   * re-writes the whole object (and hashes it), which S3 does not make the client wait for that way.
   */
  mbPerSecondExcludingComplete?: number;
  /** From the worker's first progress event (the download opened) to the Active event, by their created_at. */
  serverSeconds?: number;
  serverMbPerSecond?: number;
  /** From the mutation to the worker's first progress event. */
  queueSeconds?: number;
  memory: {
    rssBeforeMiB: number;
    peaks?: MemoryPeaks;
    /** The kernel's peak RSS over the import (VmHWM after a reset), when available. */
    kernelPeakRssMiB?: number;
    peakOverBeforeMiB?: number;
    samples?: number;
    maxSampleGapMs?: number;
    rssSeries?: Array<[number, number]>;
  };
  s3?: S3Summary;
  verified?: "sha256" | "size only";
  dataDirS3BytesAfterDelete?: number;
}

interface Context {
  baseUrl: string;
  apiKey: string;
  source: Source;
  curl: string | undefined;
  verify: boolean;
  abort: AbortSignal;
  s3Calls: S3Call[];
  s3Dir: string;
  runTag: string;
  /** Learns each checkpoint id as soon as it is created, so that a run that stops early deletes it. */
  onCreated(id: string): void;
  onDeleted(id: string): void;
  readEvents(id: string): Promise<Array<{ seq: number; type: string; data: Record<string, unknown>; created_at: Date }>>;
  readObject(key: string): Promise<NodeJS.ReadableStream>;
}

async function importOnce(ctx: Context, sizeMiB: number, label: string, withBaseline: boolean): Promise<ImportReport> {
  const bytes = sizeMiB * MiB;
  const name = `bench-${ctx.runTag}-${label}.safetensors`;
  const url = ctx.source.url(bytes, name);
  const report: ImportReport = { sizeMiB, bytes, ok: false, memory: { rssBeforeMiB: toMiB(process.memoryUsage().rss) } };

  if (withBaseline) {
    report.baseline = ctx.curl ? await curlDownload(ctx.curl, ctx.source.url(bytes, "baseline.safetensors"), bytes, ctx.abort) : await fetchDownload(ctx.source.url(bytes, "baseline.safetensors"), bytes, ctx.abort);
  }

  const timeoutMs = 120_000 + (bytes / MB) * 100; // at least 10 MB/s
  report.memory.rssBeforeMiB = toMiB(process.memoryUsage().rss);
  const haveKernelPeak = kernelPeak.reset();
  const firstCall = ctx.s3Calls.length;
  const sampler = new MemorySampler();
  const started = performance.now();
  const startedAtWall = Date.now();
  let id: string;
  let final: Record<string, unknown> | undefined;
  try {
    const data = await graphql(ctx.baseUrl, ctx.apiKey, IMPORT, { input: { type: CHECKPOINT_TYPE, urls: [url], message: `bench ${label}` } }, AbortSignal.any([ctx.abort, AbortSignal.timeout(30_000)]));
    const created = data.importCheckpoint;
    if (!isRecord(created) || typeof created.id !== "string") throw new Error(`importCheckpoint answered ${JSON.stringify(data).slice(0, 300)}`);
    id = created.id;
    report.checkpointId = id;
    ctx.onCreated(id);
    for (;;) {
      const polled = await graphql(ctx.baseUrl, ctx.apiKey, CHECKPOINT, { id }, AbortSignal.any([ctx.abort, AbortSignal.timeout(30_000)]));
      const c = polled.checkpoint;
      if (isRecord(c) && (c.status === "Active" || c.status === "Failed")) {
        final = c;
        break;
      }
      if (performance.now() - started > timeoutMs) break;
      await new Promise((r) => setTimeout(r, POLL_MS));
      if (ctx.abort.aborted) break;
    }
  } finally {
    sampler.stop();
  }
  const elapsedMs = performance.now() - started;
  const kernelPeakRssMiB = haveKernelPeak ? kernelPeak.readMiB() : undefined;
  report.memory = {
    ...report.memory,
    peaks: sampler.peaks,
    ...(kernelPeakRssMiB !== undefined ? { kernelPeakRssMiB } : {}),
    peakOverBeforeMiB: Math.round(((kernelPeakRssMiB ?? sampler.peaks.rssMiB) - report.memory.rssBeforeMiB) * 10) / 10,
    samples: sampler.samples,
    maxSampleGapMs: Math.round(sampler.maxGapMs),
    rssSeries: sampler.rssSeries,
  };
  report.s3 = summarizeS3(ctx.s3Calls.slice(firstCall));
  if (ctx.abort.aborted) throw new Error("interrupted");

  if (!final) {
    report.problem = `not Active within ${Math.round(timeoutMs / 1000)} s`;
  } else if (final.status === "Failed") {
    report.problem = `Failed: ${String(final.failureReason ?? "no reason given")}`;
  } else {
    report.seconds = elapsedMs / 1000;
    report.mbPerSecond = bytes / MB / report.seconds;
    if (report.baseline) report.ratioToBaseline = ratio(report.mbPerSecond, report.baseline.mbPerSecond);
    const completeMs = report.s3.completeMultipartUploadMs;
    if (completeMs !== undefined && elapsedMs > completeMs) report.mbPerSecondExcludingComplete = bytes / MB / ((elapsedMs - completeMs) / 1000);
    const files = Array.isArray(final.files) ? final.files.filter(isRecord) : [];
    const file = files[0];
    if (files.length !== 1 || !file || file.sizeBytes !== bytes || typeof file.key !== "string") {
      report.problem = `Active, but its files are ${JSON.stringify(files).slice(0, 300)}; expected one of ${bytes} bytes`;
    } else if (ctx.verify) {
      const [expected, stored] = await Promise.all([ctx.source.sha256(bytes), ctx.readObject(file.key).then(sha256Of)]);
      if (expected !== stored) report.problem = `the stored object's SHA-256 ${stored} is not the source's ${expected}`;
      else report.verified = "sha256";
    } else {
      report.verified = "size only";
    }
  }

  // The worker's own span, by the event log's timestamps.
  const events = await ctx.readEvents(id);
  const firstProgress = events.find((e) => e.type === "progress");
  const active = events.find((e) => e.type === "status" && e.data.status === "Active");
  if (firstProgress) report.queueSeconds = (firstProgress.created_at.getTime() - startedAtWall) / 1000;
  if (firstProgress && active) {
    report.serverSeconds = (active.created_at.getTime() - firstProgress.created_at.getTime()) / 1000;
    report.serverMbPerSecond = report.serverSeconds > 0 ? bytes / MB / report.serverSeconds : Number.NaN;
  }

  await deleteCheckpoints(ctx.baseUrl, ctx.apiKey, [id]);
  ctx.onDeleted(id);
  report.dataDirS3BytesAfterDelete = await directoryBytes(ctx.s3Dir);
  report.ok = report.problem === undefined;
  return report;
}

async function sha256Of(stream: NodeJS.ReadableStream): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

// ------------------------------------------------------------------ main

/** An error that an interrupt caused (an aborted fetch, a killed curl) ends the run as interrupted. */
async function interruptible<T>(run: BenchRun, work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (e) {
    run.throwIfInterrupted();
    throw e;
  }
}

interface Settings {
  sizesMiB: number[];
  verify: boolean;
}

function readSettings(env: NodeJS.ProcessEnv): Settings {
  const raw = env.BENCH_IMPORT_SIZES_MIB?.trim();
  let sizesMiB = DEFAULT_SIZES_MIB;
  if (raw) {
    const parts = raw.split(",").map((s) => s.trim());
    const sizes = parts.map(Number);
    if (parts.some((p) => p === "") || sizes.some((n) => !Number.isInteger(n) || n < 1 || n > MAX_SIZE_MIB)) {
      throw new UsageError(`BENCH_IMPORT_SIZES_MIB must be a comma-separated list of whole numbers of MiB from 1 to ${MAX_SIZE_MIB} (got ${JSON.stringify(raw)})`);
    }
    sizesMiB = sizes;
  }
  const verifyRaw = env.BENCH_IMPORT_VERIFY?.trim().toLowerCase();
  if (verifyRaw && !["0", "1", "true", "false", "yes", "no"].includes(verifyRaw)) throw new UsageError(`BENCH_IMPORT_VERIFY must be 1 or 0 (got ${JSON.stringify(env.BENCH_IMPORT_VERIFY)})`);
  return { sizesMiB, verify: !verifyRaw || ["1", "true", "yes"].includes(verifyRaw) };
}

function fmt(v: number | undefined, digits = 1): string {
  return v !== undefined && Number.isFinite(v) ? v.toFixed(digits) : "-";
}

function printTable(reports: ImportReport[], lines: string[]): void {
  const header = ["size MiB", "curl MB/s", "import s", "import MB/s", "vs curl", "s3 complete s", "MB/s w/o complete", "RSS before", "peak RSS", "kernel peak", "peak heap", "peak arrayBuf"];
  const rows = reports.map((r) => [
    String(r.sizeMiB),
    fmt(r.baseline?.mbPerSecond),
    fmt(r.seconds, 2),
    fmt(r.mbPerSecond),
    r.ratioToBaseline !== undefined && Number.isFinite(r.ratioToBaseline) ? `${r.ratioToBaseline.toFixed(2)}x` : "-",
    r.s3?.completeMultipartUploadMs !== undefined ? (r.s3.completeMultipartUploadMs / 1000).toFixed(2) : "-",
    fmt(r.mbPerSecondExcludingComplete),
    fmt(r.memory.rssBeforeMiB),
    fmt(r.memory.peaks?.rssMiB),
    fmt(r.memory.kernelPeakRssMiB),
    fmt(r.memory.peaks?.heapUsedMiB),
    fmt(r.memory.peaks?.arrayBuffersMiB),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => x.padStart(widths[i]!)).join("  ");
  process.stdout.write(`\n${line(header)}\n${widths.map((w) => "-".repeat(w)).join("  ")}\n${rows.map(line).join("\n")}\n\n${lines.join("\n")}\n\n`);
}

async function main(run: BenchRun): Promise<number> {
  const settings = readSettings(process.env);
  const interrupt = new AbortController();
  run.onInterrupt(() => interrupt.abort());
  const curl = findOnPath("curl", process.env.PATH);
  if (!curl) process.stderr.write("bench: no curl on PATH; the baseline is a fetch in this process that drops the body\n");

  // Started (and so stopped) before Diffgate: Diffgate's settings need its port.
  const source = await startSource(run);
  const runTag = Date.now().toString(36);
  const largest = Math.max(...settings.sizesMiB, WARMUP_MIB) * MiB;
  const diffgate = await startDiffgate(run, {
    env: { IMPORT_ALLOW_PRIVATE_HOSTS: `127.0.0.1:${source.port}` },
    checkConfig: (config) => {
      if (config.role !== "all") throw new UsageError(`ROLE=${config.role}: this bench needs Diffgate's HTTP server and its worker in one process; unset ROLE or set it to all`);
      if (!config.s3.embedded) throw new UsageError("this bench writes gigabytes into the object store, so it runs only against the embedded one: unset S3_BUCKET");
      if (config.checkpoints.importMaxBytes < largest) throw new UsageError(`IMPORT_MAX_BYTES=${config.checkpoints.importMaxBytes} is below the largest size, ${largest} bytes`);
    },
  });
  const { config, runtime, baseUrl, apiKey, dataDir } = diffgate;

  // s3rver keeps an import's parts until CompleteMultipartUpload has concatenated them into the object.
  const free = await freeBytes(dataDir);
  if (free < 2 * largest + DISK_MARGIN_BYTES) {
    throw new UsageError(`${dataDir} has ${(free / MiB).toFixed(0)} MiB free; importing ${largest / MiB} MiB needs about ${((2 * largest + DISK_MARGIN_BYTES) / MiB).toFixed(0)} MiB`);
  }

  // Every S3 request the SDK sends, timed (observation only: the request goes on unchanged).
  const s3Calls: S3Call[] = [];
  const MIDDLEWARE = "diffgateBenchTiming";
  runtime.storage.client.middlewareStack.add(
    (next, context) => async (args) => {
      const startMs = performance.now();
      let ok = false;
      try {
        const out = await next(args);
        ok = true;
        return out;
      } finally {
        s3Calls.push({ command: String(context.commandName ?? "unknown"), startMs, ms: performance.now() - startMs, ok });
      }
    },
    { step: "initialize", name: MIDDLEWARE },
  );
  run.cleanup("removing the S3 timing middleware", async () => void runtime.storage.client.middlewareStack.remove(MIDDLEWARE));

  // A run that stops early still deletes what it imported, before Diffgate closes.
  const live = new Set<string>();
  run.cleanup("deleting the bench's checkpoints", async () => {
    if (live.size) await deleteCheckpoints(baseUrl, apiKey, [...live]);
  });
  const ctx: Context = {
    baseUrl,
    apiKey,
    source,
    curl,
    verify: settings.verify,
    abort: interrupt.signal,
    s3Calls,
    s3Dir: path.join(dataDir, "s3"),
    runTag,
    onCreated: (id) => void live.add(id),
    onDeleted: (id) => void live.delete(id),
    readEvents: (id) => runtime.db.query("SELECT seq, type, data, created_at FROM job_events WHERE stream_id = $1 ORDER BY seq", [id]),
    readObject: (key) => runtime.storage.getObjectStream(key),
  };

  const idle = await idleMemory(1000);
  process.stdout.write(
    `Source: child process ${source.pid} on 127.0.0.1:${source.port}; baseline: ${curl ? `curl (${curl})` : "fetch in this process (no curl)"}\n` +
      `Import settings: part size ${config.checkpoints.importPartSizeBytes / MiB} MiB, concurrency ${config.checkpoints.importConcurrency}; ` +
      `RSS at rest after start ${fmt(idle.rssMiB)} MiB (heap used ${fmt(idle.heapUsedMiB)} MiB)\n`,
  );

  // Warm-up: the source's and curl's first request, and one small import through the whole path.
  run.throwIfInterrupted();
  await interruptible(run, curl ? curlDownload(curl, source.url(WARMUP_MIB * MiB, "warmup.safetensors"), WARMUP_MIB * MiB, interrupt.signal) : fetchDownload(source.url(WARMUP_MIB * MiB, "warmup.safetensors"), WARMUP_MIB * MiB, interrupt.signal));
  const warmup = await interruptible(run, importOnce(ctx, WARMUP_MIB, "warmup", false));
  process.stdout.write(`  warm-up ${WARMUP_MIB} MiB: ${warmup.ok ? `${fmt(warmup.seconds, 2)} s` : warmup.problem}\n`);
  const failures: string[] = [];
  if (!warmup.ok) failures.push(`warm-up import of ${WARMUP_MIB} MiB: ${warmup.problem}`);

  const reports: ImportReport[] = [];
  for (const [i, sizeMiB] of settings.sizesMiB.entries()) {
    if (failures.length) break;
    run.throwIfInterrupted();
    const freeNow = await freeBytes(dataDir);
    if (freeNow < 2 * sizeMiB * MiB + DISK_MARGIN_BYTES) {
      failures.push(`${sizeMiB} MiB: only ${(freeNow / MiB).toFixed(0)} MiB free in ${dataDir}`);
      break;
    }
    process.stdout.write(`  ${String(sizeMiB).padStart(5)} MiB ...`);
    const report = await interruptible(run, importOnce(ctx, sizeMiB, `${i + 1}-${sizeMiB}mib`, true));
    reports.push(report);
    process.stdout.write(
      report.ok
        ? ` curl ${fmt(report.baseline?.mbPerSecond)} MB/s; import ${fmt(report.seconds, 2)} s, ${fmt(report.mbPerSecond)} MB/s; peak RSS ${fmt(report.memory.kernelPeakRssMiB ?? report.memory.peaks?.rssMiB)} MiB\n`
        : ` ${report.problem}\n`,
    );
    if (!report.ok) failures.push(`${sizeMiB} MiB: ${report.problem}`);
  }
  run.throwIfInterrupted();
  if (failures.length && reports.length < settings.sizesMiB.length) process.stderr.write("bench: stopped at the first failure\n");

  // The memory target: peak RSS under TARGET_PEAK_RSS_MIB, and flat across sizes.
  const measured = reports.filter((r) => r.ok);
  const peakOf = (r: ImportReport) => r.memory.kernelPeakRssMiB ?? r.memory.peaks?.rssMiB ?? Number.NaN;
  const peaks = measured.map(peakOf);
  const tolerance = Math.max(FLAT_TOLERANCE_MIB, (2 * config.checkpoints.importPartSizeBytes) / MiB);
  const highest = peaks.length ? Math.max(...peaks) : Number.NaN;
  const spread = peaks.length ? highest - Math.min(...peaks) : Number.NaN;
  const target = {
    peakRssUnderMiB: TARGET_PEAK_RSS_MIB,
    flatToleranceMiB: tolerance,
    highestPeakRssMiB: highest,
    peakSpreadMiB: Math.round(spread * 10) / 10,
    evaluated: peaks.length > 0,
    underLimit: highest < TARGET_PEAK_RSS_MIB,
    /** Only meaningful with two sizes or more. */
    flat: spread <= tolerance,
    met: highest < TARGET_PEAK_RSS_MIB && spread <= tolerance,
    peakSource: measured.every((r) => r.memory.kernelPeakRssMiB !== undefined) ? "VmHWM (kernel peak RSS, reset before each import)" : "process.memoryUsage().rss sampled every 100 ms",
  };
  const notes = [
    `MB/s = 10^6 bytes/s; memory in MiB. Import time: importCheckpoint sent -> Active seen (poll every ${POLL_MS} ms); ` +
      "s3 complete: s3rver's CompleteMultipartUpload (it concatenates the parts on disk). Peaks: kernel = VmHWM, others sampled every 100 ms.",
    `RSS at rest after start: ${fmt(idle.rssMiB)} MiB. Part size ${config.checkpoints.importPartSizeBytes / MiB} MiB x concurrency ${config.checkpoints.importConcurrency}.`,
    `Target: peak RSS < ${TARGET_PEAK_RSS_MIB} MiB and flat (spread <= ${tolerance} MiB): ` +
      (target.evaluated
        ? `highest ${fmt(highest)} MiB, spread ${fmt(spread)} MiB${peaks.length < 2 ? " (one size only)" : ""} -> ` +
          `${target.met ? "met" : `NOT met (${[target.underLimit ? undefined : "over the limit", target.flat ? undefined : "not flat"].filter(Boolean).join(", ")})`}`
        : "not evaluated (no import succeeded)"),
  ];
  printTable(reports, notes);

  const ok = failures.length === 0 && reports.length === settings.sizesMiB.length && reports.every((r) => r.ok);
  const resultsDir = path.join(packageRoot(), "bench", "results");
  await mkdir(resultsDir, { recursive: true });
  const resultsFile = path.join(resultsDir, "checkpoint-import.json");
  const document = {
    benchmark: "checkpoint-import",
    generatedAt: new Date().toISOString(),
    ok,
    settings: {
      sizesMiB: settings.sizesMiB,
      warmupMiB: WARMUP_MIB,
      importPartSizeMiB: config.checkpoints.importPartSizeBytes / MiB,
      importConcurrency: config.checkpoints.importConcurrency,
      workerConcurrency: config.workerConcurrency,
      source: `node:http in a child process, Content-Length, a ${BLOCK_BYTES}-byte xorshift128 block repeated, written ${WRITE_CHUNK_BYTES / 1024} KiB at a time`,
      baseline: curl ? "curl -s -o /dev/null (a process of its own), time_total" : "fetch in this process, body read and dropped (no curl on PATH)",
      request: `POST /graphql importCheckpoint (type ${CHECKPOINT_TYPE}), then checkpoint(id) every ${POLL_MS} ms until Active`,
      memory: `process.memoryUsage() every ${SAMPLE_MS} ms in this process (Diffgate with its worker and the embedded s3rver; the embedded Postgres and Redis are other processes)` +
        "; kernelPeakRssMiB is /proc/self/status VmHWM after writing 5 to /proc/self/clear_refs before the import",
      verify: settings.verify ? "the stored object read back and its SHA-256 compared with the source's" : "the stored size only",
      units: { throughput: "MB/s = 10^6 bytes per second", memory: "MiB" },
    },
    environment: environment(),
    diffgate: { role: config.role, dependencies: diffgate.dependencyNotes },
    idleMemory: idle,
    warmup,
    imports: reports,
    target,
    failures,
  };
  await writeFile(resultsFile, `${JSON.stringify(document, null, 2)}\n`);
  process.stdout.write(`Results written to ${path.relative(process.cwd(), resultsFile) || resultsFile}\n`);

  for (const f of failures) process.stderr.write(`bench: ${f}\n`);
  return ok ? 0 : 1;
}

if (process.argv.includes(SOURCE_ARG)) {
  runSource();
} else {
  await runBench(main);
}
