import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { Readable } from "node:stream";
import ipaddr from "ipaddr.js";

/**
 * SSRF-guarded HTTP(S) download for checkpoint import from a user-supplied URL.
 *
 * Every hop (the first URL and each redirect) is parsed, its scheme and credentials checked, its host
 * resolved ONCE, every resolved address vetted, and the socket then connects only to that vetted
 * address: node:http/https get a `lookup` that answers with it (the socket never re-resolves, so DNS
 * rebinding cannot swap it) while Host and TLS SNI/certificate checks keep the original hostname.
 * Redirects are never followed by node; they are followed here, re-vetting each Location before any
 * connection is made. `agent: false` gives each hop a fresh socket: a pooled keep-alive socket (the
 * global agent's) could have been opened by other code without these checks.
 *
 * Errors: {@link DownloadRefused} is a permanent, policy refusal (don't retry); {@link DownloadTimeout},
 * resolver errors (ENOTFOUND…), connection and TLS errors are operational; an abort rejects / destroys
 * the stream with the signal's reason (an AbortError by default).
 */

export interface DownloadPolicy {
  /** Hosts (lowercase hostname, or hostname:port) that may resolve to loopback/private addresses — an explicit allow-list, used by tests and by operators with internal mirrors. Empty by default. */
  allowPrivateHosts: string[];
  /** Refuse when Content-Length says more, and stop when the body exceeds it. */
  maxBytes: number;
  /** e.g. [".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".yaml"], matched case-insensitively on the file name. */
  allowedExtensions: string[];
  /** e.g. 5 */
  maxRedirects: number;
  /** Per hop: resolving, connecting (and TLS) and receiving the response headers, e.g. 10_000. */
  connectTimeoutMs: number;
  /** Abort when no bytes arrive for this long while the consumer is waiting for them, e.g. 60_000. */
  idleTimeoutMs: number;
}

export type Resolver = (hostname: string) => Promise<Array<{ address: string; family: 4 | 6 }>>;

export type RefusalReason = "scheme" | "address" | "extension" | "size" | "redirects" | "status" | "url";

export class DownloadRefused extends Error {
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super(message);
    this.name = "DownloadRefused";
  }
}

/** Not a refusal: the server was too slow ("connect": no response headers in time; "idle": the body stalled). */
export class DownloadTimeout extends Error {
  constructor(
    readonly phase: "connect" | "idle",
    message: string,
  ) {
    super(message);
    this.name = "DownloadTimeout";
  }
}

export interface OpenedDownload {
  stream: Readable;
  fileName: string;
  contentLength?: number;
  finalUrl: string;
}

/** What a hop is about to connect to; `address` has been vetted. */
export interface ConnectTarget {
  url: URL;
  address: string;
  family: 4 | 6;
  port: number;
}

/**
 * Opens the request for one hop. The default is {@link defaultConnect}; tests inject a spy (which may
 * delegate to the default, or throw to prove that a hop got this far without opening a socket).
 */
export type Connect = (target: ConnectTarget, options: https.RequestOptions) => http.ClientRequest;

export interface GuardedDownloadOptions {
  signal?: AbortSignal;
  /** DNS; defaults to {@link systemResolver}. Not called for IP-literal hosts. */
  resolver?: Resolver;
  connect?: Connect;
}

/** getaddrinfo (so /etc/hosts applies), every address, in the system's order. */
export const systemResolver: Resolver = async (hostname) => {
  const found = await dns.promises.lookup(hostname, { all: true, verbatim: true });
  return found.map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));
};

/** node:http for http:, node:https for https:, with the options as built (pinned `lookup`, `agent: false`). */
export const defaultConnect: Connect = (target, options) =>
  target.url.protocol === "https:" ? https.request(options) : http.request(options);

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const MAX_URL_LENGTH = 8192;
const MAX_FILE_NAME_LENGTH = 255;
const USER_AGENT = "diffgate-checkpoint-import";

export async function openGuardedDownload(url: string, policy: DownloadPolicy, options: GuardedDownloadOptions = {}): Promise<OpenedDownload> {
  checkPolicy(policy);
  const resolver = options.resolver ?? systemResolver;
  const connect = options.connect ?? defaultConnect;
  const signal = options.signal;
  throwIfAborted(signal);

  let current = checkUrl(url);
  for (let redirects = 0; ; redirects++) {
    const { req, res } = await requestHop(current, policy, resolver, connect, signal);
    const status = res.statusCode ?? 0;
    if (REDIRECT_STATUSES.has(status)) {
      const location = res.headers.location;
      discard(req, res);
      if (location === undefined || location === "") throw new DownloadRefused("status", `HTTP ${status} redirect without a Location`);
      if (redirects >= policy.maxRedirects) throw new DownloadRefused("redirects", `more than ${policy.maxRedirects} redirects`);
      current = checkUrl(location, current);
      continue;
    }
    if (status < 200 || status > 299) {
      discard(req, res);
      const text = (res.statusMessage ?? "").slice(0, 64);
      throw new DownloadRefused("status", `the server answered HTTP ${status}${text ? ` ${text}` : ""}`);
    }
    try {
      return openBody(req, res, current, policy, signal);
    } catch (e) {
      discard(req, res);
      throw e;
    }
  }
}

/** Throws DownloadRefused("extension") unless `name` is a plain file name with an allowed extension. */
export function checkFileName(name: string, policy: DownloadPolicy): void {
  const shown = JSON.stringify(name.length > 100 ? `${name.slice(0, 100)}…` : name);
  const refuse = (why: string): never => {
    throw new DownloadRefused("extension", `file name ${shown} ${why}`);
  };
  if (name.length === 0) refuse("is empty");
  if (name.length > MAX_FILE_NAME_LENGTH) refuse(`is longer than ${MAX_FILE_NAME_LENGTH} characters`);
  if (name.includes("/") || name.includes("\\")) refuse("contains a path separator");
  if (name.includes("..")) refuse('contains ".."');
  // Cc covers NUL and the C0/C1 controls; Cf the invisible format characters (bidi overrides, zero-widths).
  if (/[\p{Cc}\p{Cf}]/u.test(name)) refuse("contains control characters");
  if (name.trim() !== name) refuse("starts or ends with white space");
  const lower = name.toLowerCase();
  const ok = policy.allowedExtensions.some((raw) => {
    const ext = normaliseExtension(raw);
    return ext.length > 1 && lower.endsWith(ext) && lower.length > ext.length;
  });
  if (!ok) refuse(`does not end with one of ${policy.allowedExtensions.map(normaliseExtension).join(", ")}`);
}

// ---------------------------------------------------------------------------------------------------
// URLs and addresses

function checkUrl(raw: string, base?: URL): URL {
  if (raw.length > MAX_URL_LENGTH) throw new DownloadRefused("url", `the URL is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = base ? new URL(raw, base) : new URL(raw);
  } catch {
    throw new DownloadRefused("url", base ? "the redirect Location is not a valid URL" : "not a valid URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new DownloadRefused("scheme", `only http and https URLs can be imported, not ${url.protocol.replace(/:$/, "")}`);
  }
  if (url.username !== "" || url.password !== "") throw new DownloadRefused("url", "URLs with credentials (user:password@) are not accepted");
  if (url.hostname === "") throw new DownloadRefused("url", "the URL has no host");
  url.hash = "";
  return url;
}

function effectivePort(url: URL): number {
  return url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
}

/** URL.hostname brackets IPv6 literals; sockets, SNI and DNS want it bare. */
function bareHostname(url: URL): string {
  const h = url.hostname;
  return h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h;
}

/** Matches `hostname` or `hostname:port` (the effective port; IPv6 literals bracketed, as in URLs). */
function isAllowListed(url: URL, policy: DownloadPolicy): boolean {
  const host = url.hostname.toLowerCase();
  const withPort = `${host}:${effectivePort(url)}`;
  return policy.allowPrivateHosts.some((entry) => {
    const e = entry.trim().toLowerCase();
    return e !== "" && (e === host || e === withPort);
  });
}

type AddressClass =
  | { kind: "public" }
  /** May be used only by allow-listed hosts. */
  | { kind: "internal"; range: string }
  /** Never, allow-listed or not. */
  | { kind: "forbidden"; range: string };

const METADATA_V6 = ipaddr.IPv6.parse("fd00:ec2::254");

/** Exported for tests and for callers that vet addresses of their own. */
export function classifyAddress(address: string): AddressClass {
  const family = net.isIP(address);
  if (family === 0 || address.includes("%")) return { kind: "forbidden", range: "invalid" };
  if (family === 4) return classifyV4(ipaddr.IPv4.parse(address));
  const v6 = ipaddr.IPv6.parse(address);
  if (v6.isIPv4MappedAddress()) {
    const inner = classifyV4(v6.toIPv4Address());
    return inner.kind === "public" ? inner : { ...inner, range: `ipv4Mapped ${inner.range}` };
  }
  const p = v6.parts;
  // ::a.b.c.d, IPv4-compatible (deprecated): ipaddr calls it unicast. (::/128 and ::1 are caught below.)
  if (p[0] === 0 && p[1] === 0 && p[2] === 0 && p[3] === 0 && p[4] === 0 && p[5] === 0 && (p[6] !== 0 || (p[7] ?? 0) > 1)) {
    return { kind: "forbidden", range: "ipv4Compatible" };
  }
  if (v6.match(METADATA_V6, 128)) return { kind: "forbidden", range: "cloud metadata" };
  // Everything ipaddr names is refused: 6to4, Teredo, NAT64 (rfc6052), rfc6145 and the rest embed or
  // translate to IPv4 addresses we could not vet, or are not globally routed.
  const range = v6.range();
  if (range === "unicast") return { kind: "public" };
  if (range === "loopback" || range === "uniqueLocal") return { kind: "internal", range };
  return { kind: "forbidden", range };
}

function classifyV4(v4: ipaddr.IPv4): AddressClass {
  const range = v4.range();
  if (range === "unicast") return { kind: "public" };
  if (range === "loopback" || range === "private" || range === "carrierGradeNat") return { kind: "internal", range };
  // unspecified, broadcast, multicast, linkLocal (169.254.169.254 metadata), reserved, as112, amt…
  return { kind: "forbidden", range };
}

interface Vetted {
  address: string;
  family: 4 | 6;
}

async function resolveAndVet(url: URL, policy: DownloadPolicy, resolver: Resolver): Promise<Vetted> {
  const host = bareHostname(url);
  const literal = net.isIP(host);
  const found = literal !== 0 ? [{ address: host, family: literal }] : await resolver(host);
  if (found.length === 0) throw new DownloadRefused("address", `${url.hostname} has no addresses`);
  const allowPrivate = isAllowListed(url, policy);
  const vetted: Vetted[] = [];
  for (const a of found) {
    const c = classifyAddress(a.address);
    // Addresses are deliberately not echoed: the message can reach the user, and should not map internal DNS.
    if (c.kind === "forbidden" || (c.kind === "internal" && !allowPrivate)) {
      throw new DownloadRefused("address", `${url.hostname} resolves to a non-public address (${c.range})`);
    }
    vetted.push({ address: a.address, family: net.isIP(a.address) === 6 ? 6 : 4 });
  }
  return vetted[0]!;
}

/** A `lookup` for node's socket that answers with the vetted address whatever it is asked. */
function pinnedLookup(v: Vetted): net.LookupFunction {
  return (_hostname, options, callback) => {
    process.nextTick(() => {
      if (options.all) callback(null, [{ address: v.address, family: v.family }]);
      else callback(null, v.address, v.family);
    });
  };
}

// ---------------------------------------------------------------------------------------------------
// One hop

async function requestHop(
  url: URL,
  policy: DownloadPolicy,
  resolver: Resolver,
  connect: Connect,
  signal: AbortSignal | undefined,
): Promise<{ req: http.ClientRequest; res: http.IncomingMessage }> {
  throwIfAborted(signal);
  const started = Date.now();
  const timeoutError = () => new DownloadTimeout("connect", `no response from ${url.hostname} within ${policy.connectTimeoutMs} ms`);

  const vetted = await raceTimeoutAndAbort(resolveAndVet(url, policy, resolver), policy.connectTimeoutMs, timeoutError, signal);
  const remaining = policy.connectTimeoutMs - (Date.now() - started);
  if (remaining <= 0) throw timeoutError();

  const host = bareHostname(url);
  const port = effectivePort(url);
  const options: https.RequestOptions = {
    protocol: url.protocol,
    hostname: host,
    port,
    path: `${url.pathname}${url.search}`,
    method: "GET",
    headers: { Host: url.host, "User-Agent": USER_AGENT, Accept: "*/*", "Accept-Encoding": "identity" },
    agent: false,
    family: vetted.family,
    lookup: pinnedLookup(vetted),
  };
  // SNI and the certificate check use the original name (SNI must not carry an IP literal).
  if (url.protocol === "https:" && net.isIP(host) === 0) options.servername = host;

  throwIfAborted(signal);
  const req = connect({ url, address: vetted.address, family: vetted.family, port }, options);
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err: Error | null, res?: http.IncomingMessage) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      if (err) {
        req.destroy();
        reject(err);
      } else resolve({ req, res: res! });
    };
    const timer = setTimeout(() => settle(timeoutError()), remaining);
    const onAbort = () => settle(abortError(signal));
    signal?.addEventListener("abort", onAbort, { once: true });
    // Stays attached for the request's life: a late socket error must never become an uncaught one.
    req.on("error", (err) => settle(err));
    req.once("response", (res) => settle(null, res));
    req.end();
  });
}

function discard(req: http.ClientRequest, res: http.IncomingMessage): void {
  res.destroy();
  req.destroy();
}

// ---------------------------------------------------------------------------------------------------
// The body

function openBody(
  req: http.ClientRequest,
  res: http.IncomingMessage,
  finalUrl: URL,
  policy: DownloadPolicy,
  signal: AbortSignal | undefined,
): OpenedDownload {
  const contentLength = parseContentLength(res.headers["content-length"]);
  if (contentLength !== undefined && contentLength > policy.maxBytes) {
    throw new DownloadRefused("size", `the file is ${contentLength} bytes; at most ${policy.maxBytes} are accepted`);
  }
  const fileName = fileNameOf(res, finalUrl);
  checkFileName(fileName, policy);
  throwIfAborted(signal);

  let received = 0;
  let wanting = false;
  let idleTimer: NodeJS.Timeout | undefined;
  const disarmIdle = () => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = undefined;
  };
  // Armed only while the consumer waits for bytes: a consumer applying back-pressure (a slow upload)
  // pauses the clock rather than tripping it.
  const armIdle = () => {
    disarmIdle();
    idleTimer = setTimeout(
      () => stream.destroy(new DownloadTimeout("idle", `no data from ${finalUrl.hostname} for ${policy.idleTimeoutMs} ms`)),
      policy.idleTimeoutMs,
    );
  };
  const pump = () => {
    while (wanting && !stream.destroyed) {
      const chunk = res.read() as Buffer | null;
      if (chunk === null) {
        armIdle();
        return;
      }
      received += chunk.length;
      if (received > policy.maxBytes) {
        stream.destroy(new DownloadRefused("size", `the file is larger than ${policy.maxBytes} bytes`));
        return;
      }
      wanting = stream.push(chunk);
    }
    disarmIdle();
  };
  const onAbort = () => stream.destroy(abortError(signal));

  const stream = new Readable({
    read() {
      wanting = true;
      pump();
    },
    destroy(err, cb) {
      disarmIdle();
      signal?.removeEventListener("abort", onAbort);
      res.destroy();
      req.destroy();
      cb(err);
    },
  });

  res.on("readable", () => {
    disarmIdle();
    pump();
  });
  res.on("end", () => {
    disarmIdle();
    if (contentLength !== undefined && received !== contentLength) {
      stream.destroy(new Error(`the body ended after ${received} of ${contentLength} bytes`));
    } else stream.push(null);
  });
  res.on("error", (err) => stream.destroy(err));
  // The hop's own listener is still on req; this one forwards what arrives while streaming.
  req.on("error", (err) => stream.destroy(err));
  signal?.addEventListener("abort", onAbort, { once: true });

  const opened: OpenedDownload = { stream, fileName, finalUrl: finalUrl.href };
  if (contentLength !== undefined) opened.contentLength = contentLength;
  return opened;
}

function parseContentLength(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d{1,16}$/.test(v.trim())) return undefined;
  return Number(v.trim());
}

/** Content-Disposition's filename when present (refused, not repaired, when unsafe), else the URL's last segment. */
function fileNameOf(res: http.IncomingMessage, url: URL): string {
  const header = res.headers["content-disposition"];
  if (header) {
    const fromHeader = contentDispositionFileName(header);
    if (fromHeader !== undefined) return fromHeader;
  }
  const last = url.pathname.split("/").pop() ?? "";
  try {
    return decodeURIComponent(last);
  } catch {
    throw new DownloadRefused("extension", "the file name in the URL is not valid percent-encoded UTF-8");
  }
}

/** RFC 6266: filename* (RFC 8187 ext-value) wins over filename. Undefined when neither is present. */
export function contentDispositionFileName(header: string): string | undefined {
  const params = parseHeaderParams(header);
  const extended = params.get("filename*");
  if (extended !== undefined) {
    const decoded = decodeExtValue(extended);
    if (decoded !== undefined) return decoded.trim();
  }
  const plain = params.get("filename");
  if (plain !== undefined) return latin1ToUtf8(plain).trim();
  if (extended !== undefined) throw new DownloadRefused("extension", "the Content-Disposition file name cannot be decoded");
  return undefined;
}

/** `type; a=b; c="d \" e"` → {a: "b", c: "d \" e"} (names lowercased; the first occurrence wins). */
function parseHeaderParams(header: string): Map<string, string> {
  const params = new Map<string, string>();
  let i = header.indexOf(";");
  if (i < 0) return params;
  const n = header.length;
  while (i < n) {
    i++; // past ';'
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
    const eq = header.indexOf("=", i);
    const semi = header.indexOf(";", i);
    if (eq < 0 || (semi >= 0 && semi < eq)) {
      if (semi < 0) break;
      i = semi;
      continue;
    }
    const name = header.slice(i, eq).trim().toLowerCase();
    i = eq + 1;
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
    let value = "";
    if (header[i] === '"') {
      i++;
      while (i < n && header[i] !== '"') {
        if (header[i] === "\\" && i + 1 < n) i++;
        value += header[i];
        i++;
      }
      i++; // closing quote
      const next = header.indexOf(";", i);
      i = next < 0 ? n : next;
    } else {
      const next = header.indexOf(";", i);
      const end = next < 0 ? n : next;
      value = header.slice(i, end).trim();
      i = end;
    }
    if (name !== "" && !params.has(name)) params.set(name, value);
  }
  return params;
}

/** RFC 8187 `charset'lang'pct-encoded`; UTF-8 and ISO-8859-1 only. */
function decodeExtValue(v: string): string | undefined {
  const m = /^([A-Za-z0-9!#$%&+^_`{}~-]+)'[^']*'(.*)$/.exec(v.trim());
  if (!m) return undefined;
  const charset = m[1]!.toLowerCase();
  const encoded = m[2]!;
  if (!/^(?:[A-Za-z0-9!#$&+.^_`|~-]|%[0-9A-Fa-f]{2})*$/.test(encoded)) return undefined;
  if (charset === "utf-8") {
    try {
      return decodeURIComponent(encoded);
    } catch {
      return undefined;
    }
  }
  if (charset === "iso-8859-1") return encoded.replace(/%([0-9A-Fa-f]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
  return undefined;
}

/** Node hands header values over as latin1; a UTF-8 name sent raw decodes properly here. */
function latin1ToUtf8(s: string): string {
  if (!/[^\x00-\x7f]/.test(s)) return s;
  const bytes = Buffer.from(s, "latin1");
  const utf8 = bytes.toString("utf8");
  return Buffer.from(utf8, "utf8").equals(bytes) ? utf8 : s;
}

// ---------------------------------------------------------------------------------------------------
// Small helpers

function normaliseExtension(ext: string): string {
  const e = ext.trim().toLowerCase();
  return e.startsWith(".") ? e : `.${e}`;
}

function checkPolicy(p: DownloadPolicy): void {
  const positive = (n: number) => Number.isFinite(n) && n > 0;
  if (!positive(p.maxBytes)) throw new TypeError("DownloadPolicy.maxBytes must be a positive number");
  if (!Number.isInteger(p.maxRedirects) || p.maxRedirects < 0) throw new TypeError("DownloadPolicy.maxRedirects must be a non-negative integer");
  if (!positive(p.connectTimeoutMs)) throw new TypeError("DownloadPolicy.connectTimeoutMs must be positive");
  if (!positive(p.idleTimeoutMs)) throw new TypeError("DownloadPolicy.idleTimeoutMs must be positive");
  if (p.allowedExtensions.length === 0) throw new TypeError("DownloadPolicy.allowedExtensions must not be empty");
}

function abortError(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error) return reason;
  const e = new Error("the download was aborted", { cause: reason });
  e.name = "AbortError";
  return e;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

/** The promise's outcome, unless the timeout or the signal comes first (the promise is then left to settle unobserved). */
function raceTimeoutAndAbort<T>(promise: Promise<T>, ms: number, onTimeout: () => Error, signal: AbortSignal | undefined): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const timer = setTimeout(() => {
      done();
      reject(onTimeout());
    }, ms);
    const onAbort = () => {
      done();
      reject(abortError(signal));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        done();
        resolve(v);
      },
      (e: unknown) => {
        done();
        reject(e);
      },
    );
  });
}
