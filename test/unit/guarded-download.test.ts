import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import net from "node:net";
import type { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  DownloadRefused,
  DownloadTimeout,
  checkFileName,
  classifyAddress,
  contentDispositionFileName,
  defaultConnect,
  openGuardedDownload,
  type Connect,
  type ConnectTarget,
  type DownloadPolicy,
  type Resolver,
} from "../../src/adapters/http/guarded-download.js";

// No test here may open a connection to anything but 127.0.0.1: every call goes through `guard()`,
// whose connect hook records each attempt and throws (before any socket exists) for other addresses.

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

let server: http.Server;
let port: number;
let origin: string;
let routes: Map<string, Handler>;
let seen: Array<{ path: string; host: string | undefined }>;

beforeEach(async () => {
  routes = new Map();
  seen = [];
  server = http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    seen.push({ path, host: req.headers.host });
    const route = routes.get(path) ?? [...routes.entries()].find(([p]) => p.endsWith("*") && path.startsWith(p.slice(0, -1)))?.[1];
    if (route) route(req, res);
    else res.writeHead(404).end("not found");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
  origin = `http://127.0.0.1:${port}`;
});

afterEach(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function policy(over: Partial<DownloadPolicy> = {}): DownloadPolicy {
  return {
    allowPrivateHosts: [`127.0.0.1:${port}`],
    maxBytes: 1024 * 1024,
    allowedExtensions: [".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".yaml"],
    maxRedirects: 5,
    connectTimeoutMs: 5_000,
    idleTimeoutMs: 5_000,
    ...over,
  };
}

function guard(): { calls: ConnectTarget[]; connect: Connect } {
  const calls: ConnectTarget[] = [];
  const connect: Connect = (target, options) => {
    calls.push(target);
    if (target.address !== "127.0.0.1") throw new Error(`the test tried to connect to ${target.address}`);
    return defaultConnect(target, options);
  };
  return { calls, connect };
}

function fakeDns(table: Record<string, string[]>) {
  return vi.fn<Resolver>(async (hostname) => {
    const addresses = table[hostname];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
    return addresses.map((address) => ({ address, family: net.isIP(address) === 6 ? (6 as const) : (4 as const) }));
  });
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error("expected a failure");
    },
    (e: unknown) => e,
  );
}

async function refusal(p: Promise<unknown>, reason: DownloadRefused["reason"]): Promise<DownloadRefused> {
  const e = await failure(p);
  expect(e).toBeInstanceOf(DownloadRefused);
  expect((e as DownloadRefused).reason).toBe(reason);
  return e as DownloadRefused;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function serveBytes(body: Buffer, headers: http.OutgoingHttpHeaders = {}): Handler {
  return (_req, res) => {
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": body.length, ...headers });
    res.end(body);
  };
}

function redirect(status: number, location: string): Handler {
  return (_req, res) => res.writeHead(status, { Location: location }).end();
}

describe("openGuardedDownload: success", () => {
  it("streams the bytes of an allow-listed loopback server and names the file from the URL", async () => {
    const body = randomBytes(300_000);
    routes.set("/files/model.safetensors", serveBytes(body));
    const g = guard();
    const d = await openGuardedDownload(`${origin}/files/model.safetensors?download=1#frag`, policy(), { connect: g.connect });
    expect(d.fileName).toBe("model.safetensors");
    expect(d.contentLength).toBe(body.length);
    expect(d.finalUrl).toBe(`${origin}/files/model.safetensors?download=1`);
    expect((await collect(d.stream)).equals(body)).toBe(true);
    expect(g.calls).toHaveLength(1);
    expect(g.calls[0]).toMatchObject({ address: "127.0.0.1", family: 4, port });
  });

  it("accepts a body of exactly maxBytes, chunked, without Content-Length", async () => {
    routes.set("/exact.bin", (_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(600, 1));
      res.end(Buffer.alloc(400, 2));
    });
    const d = await openGuardedDownload(`${origin}/exact.bin`, policy({ maxBytes: 1000 }), { connect: guard().connect });
    expect(d.contentLength).toBeUndefined();
    expect((await collect(d.stream)).length).toBe(1000);
  });

  it("connects to the vetted address only: a rebinding resolver is asked once, and Host keeps the name", async () => {
    routes.set("/m.ckpt", serveBytes(Buffer.from("weights")));
    let calls = 0;
    const resolver = vi.fn<Resolver>(async () => (calls++ === 0 ? [{ address: "127.0.0.1", family: 4 }] : [{ address: "169.254.169.254", family: 4 }]));
    const g = guard();
    const d = await openGuardedDownload(`http://mirror.test:${port}/m.ckpt`, policy({ allowPrivateHosts: [`mirror.test:${port}`] }), { resolver, connect: g.connect });
    expect((await collect(d.stream)).toString()).toBe("weights");
    expect(resolver).toHaveBeenCalledTimes(1);
    expect(resolver).toHaveBeenCalledWith("mirror.test");
    expect(seen).toEqual([{ path: "/m.ckpt", host: `mirror.test:${port}` }]);
    expect(g.calls.map((c) => c.address)).toEqual(["127.0.0.1"]);
  });

  it("hands node a pinned lookup (both callback forms), SNI = the hostname and no pooled agent", async () => {
    const resolver = fakeDns({ "models.example": ["8.8.8.8"] });
    let captured: { target: ConnectTarget; options: Parameters<Connect>[1] } | undefined;
    const connect: Connect = (target, options) => {
      captured = { target, options };
      throw new Error("stop before connecting");
    };
    const e = await failure(openGuardedDownload("https://models.example/a/b.safetensors?x=1", policy(), { resolver, connect }));
    expect((e as Error).message).toBe("stop before connecting");
    expect(captured!.target).toMatchObject({ address: "8.8.8.8", family: 4, port: 443 });
    const o = captured!.options;
    expect(o).toMatchObject({ hostname: "models.example", port: 443, path: "/a/b.safetensors?x=1", method: "GET", servername: "models.example", agent: false, family: 4 });
    expect(o.headers).toMatchObject({ Host: "models.example" });
    const single = await new Promise<unknown[]>((resolve) => o.lookup!("anything.else", { family: 0 }, (...args) => resolve(args)));
    expect(single).toEqual([null, "8.8.8.8", 4]);
    const all = await new Promise<unknown[]>((resolve) => o.lookup!("anything.else", { all: true }, (...args) => resolve(args)));
    expect(all).toEqual([null, [{ address: "8.8.8.8", family: 4 }]]);
  });

  it("follows relative and absolute redirects on the allow-listed host", async () => {
    routes.set("/r1", redirect(302, "/r2"));
    routes.set("/r2", redirect(308, `${origin}/files/final.pth`));
    routes.set("/files/final.pth", serveBytes(Buffer.from("ok")));
    const d = await openGuardedDownload(`${origin}/r1`, policy(), { connect: guard().connect });
    expect(d.finalUrl).toBe(`${origin}/files/final.pth`);
    expect(d.fileName).toBe("final.pth");
    expect((await collect(d.stream)).toString()).toBe("ok");
    expect(seen.map((s) => s.path)).toEqual(["/r1", "/r2", "/files/final.pth"]);
  });

  it("names the file from Content-Disposition (filename* preferred) or the percent-decoded URL segment", async () => {
    routes.set("/dl/1", serveBytes(Buffer.from("a"), { "Content-Disposition": `attachment; filename="fallback.bin"; filename*=UTF-8''mod%C3%A8le%20v2.safetensors` }));
    routes.set("/dl/2", serveBytes(Buffer.from("b"), { "Content-Disposition": 'attachment; filename="plain.yaml"' }));
    routes.set("/files/my%20model.ckpt", serveBytes(Buffer.from("c")));
    const names: string[] = [];
    for (const path of ["/dl/1", "/dl/2", "/files/my%20model.ckpt"]) {
      const d = await openGuardedDownload(`${origin}${path}`, policy(), { connect: guard().connect });
      names.push(d.fileName);
      await collect(d.stream);
    }
    expect(names).toEqual(["modèle v2.safetensors", "plain.yaml", "my model.ckpt"]);
  });
});

describe("openGuardedDownload: addresses", () => {
  it("refuses the loopback test server when it is not allow-listed, without connecting", async () => {
    routes.set("/files/model.safetensors", serveBytes(Buffer.from("x")));
    const g = guard();
    await refusal(openGuardedDownload(`${origin}/files/model.safetensors`, policy({ allowPrivateHosts: [] }), { connect: g.connect }), "address");
    // The allow-list entry is per host:port: another port of the same host is not covered.
    await refusal(openGuardedDownload(`${origin}/files/model.safetensors`, policy({ allowPrivateHosts: ["127.0.0.1:1"] }), { connect: g.connect }), "address");
    expect(g.calls).toEqual([]);
    expect(seen).toEqual([]);
  });

  const refusedAddresses = [
    "127.0.0.1",
    "127.255.0.9",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.10",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "fd00:ec2::254",
    "ff02::1",
    "2002:7f00:1::1", // 6to4 of 127.0.0.1
    "2002:a00:1::1", // 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
    "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
    "fe80::1%eth0",
    "127.1", // not an address at all
  ];
  it.each(refusedAddresses)("refuses a host resolving to %s without connecting", async (address) => {
    const resolver = vi.fn<Resolver>(async () => [{ address, family: address.includes(":") ? 6 : 4 }]);
    const g = guard();
    const e = await refusal(openGuardedDownload("https://models.example/x.safetensors", policy(), { resolver, connect: g.connect }), "address");
    expect(resolver).toHaveBeenCalledWith("models.example");
    expect(g.calls).toEqual([]);
    expect(e.message).not.toContain(address); // internal addresses are not echoed to the user
  });

  it("refuses when any one of several addresses is private (public first or last)", async () => {
    for (const addresses of [["93.184.215.14", "10.0.0.1"], ["10.0.0.1", "93.184.215.14"], ["2606:4700::1111", "fd00:ec2::254"]]) {
      const resolver = fakeDns({ "cdn.example": addresses });
      const g = guard();
      await refusal(openGuardedDownload("https://cdn.example/m.safetensors", policy(), { resolver, connect: g.connect }), "address");
      expect(g.calls).toEqual([]);
    }
  });

  it("refuses a host with no addresses", async () => {
    const g = guard();
    await refusal(openGuardedDownload("https://empty.example/m.bin", policy(), { resolver: async () => [], connect: g.connect }), "address");
    expect(g.calls).toEqual([]);
  });

  it("the allow-list never opens link-local, metadata, unspecified or multicast addresses", async () => {
    for (const address of ["169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1", "fe80::1"]) {
      const g = guard();
      const resolver = vi.fn<Resolver>(async () => [{ address, family: address.includes(":") ? 6 : 4 }]);
      await refusal(openGuardedDownload("http://mirror.internal/m.bin", policy({ allowPrivateHosts: ["mirror.internal"] }), { resolver, connect: g.connect }), "address");
      expect(g.calls).toEqual([]);
    }
  });

  it("checks IP-literal hosts, including decimal, octal, hex and mapped spellings, without DNS", async () => {
    // The WHATWG parser normalises the odd IPv4 spellings, so they are seen (and refused) as what they are.
    expect(new URL("http://2130706433/").hostname).toBe("127.0.0.1");
    expect(new URL("http://0x7f.1/").hostname).toBe("127.0.0.1");
    expect(new URL("http://017700000001/").hostname).toBe("127.0.0.1");
    expect(new URL("http://0/").hostname).toBe("0.0.0.0");
    expect(new URL("http://[::ffff:127.0.0.1]/").hostname).toBe("[::ffff:7f00:1]");
    const urls = [
      "http://127.0.0.1/x.safetensors",
      "http://2130706433/x.safetensors",
      "http://0x7f.1/x.safetensors",
      "http://017700000001/x.safetensors",
      "http://127.1/x.safetensors",
      "http://%31%32%37.0.0.1/x.safetensors",
      "http://0/x.safetensors",
      "http://0xa9fea9fe/latest/meta-data/x.safetensors",
      "http://169.254.169.254/latest/meta-data/x.safetensors",
      "http://[::1]/x.safetensors",
      "http://[::]/x.safetensors",
      "http://[::ffff:127.0.0.1]/x.safetensors",
      "http://[::ffff:a9fe:a9fe]/x.safetensors",
      "http://[fd00:ec2::254]/latest/meta-data/x.safetensors",
      `http://127.0.0.1:${port}/x.safetensors`,
    ];
    for (const url of urls) {
      const resolver = fakeDns({});
      const g = guard();
      await refusal(openGuardedDownload(url, policy({ allowPrivateHosts: [] }), { resolver, connect: g.connect }), "address");
      expect(resolver).not.toHaveBeenCalled();
      expect(g.calls).toEqual([]);
    }
    expect(seen).toEqual([]);
  });

  it("classifies public addresses as public", () => {
    for (const a of ["8.8.8.8", "93.184.215.14", "2606:4700::1111", "2a00:1450:4001:80e::200e"]) expect(classifyAddress(a)).toEqual({ kind: "public" });
    expect(classifyAddress("10.0.0.1")).toEqual({ kind: "internal", range: "private" });
    expect(classifyAddress("::ffff:192.168.0.1")).toEqual({ kind: "internal", range: "ipv4Mapped private" });
    expect(classifyAddress("169.254.169.254")).toEqual({ kind: "forbidden", range: "linkLocal" });
  });

  it("passes resolver failures through unchanged (not a refusal)", async () => {
    const g = guard();
    const e = await failure(openGuardedDownload("https://nowhere.example/m.bin", policy(), { resolver: fakeDns({}), connect: g.connect }));
    expect(e).not.toBeInstanceOf(DownloadRefused);
    expect((e as { code?: string }).code).toBe("ENOTFOUND");
    expect(g.calls).toEqual([]);
  });
});

describe("openGuardedDownload: URLs, schemes and redirects", () => {
  it.each(["file:///etc/passwd", "ftp://example.com/x.safetensors", "data:text/plain,hello", "gopher://example.com/_x", "javascript:alert(1)", "ws://example.com/x.bin", "dict://example.com:11211/"])(
    "refuses the scheme of %s",
    async (url) => {
      const resolver = fakeDns({ "example.com": ["93.184.215.14"] });
      const g = guard();
      await refusal(openGuardedDownload(url, policy(), { resolver, connect: g.connect }), "scheme");
      expect(resolver).not.toHaveBeenCalled();
      expect(g.calls).toEqual([]);
    },
  );

  it.each([
    ["http://user:pass@example.com/x.safetensors"],
    ["https://user@example.com/x.safetensors"],
    ["https://:pw@example.com/x.safetensors"],
    ["not a url"],
    ["http://"],
    ["a 9 KB URL", `https://example.com/${"a".repeat(9000)}.bin`],
  ])(
    "refuses the URL %s",
    async (label, long?: string) => {
      const resolver = fakeDns({ "example.com": ["93.184.215.14"] });
      const g = guard();
      await refusal(openGuardedDownload(long ?? label, policy(), { resolver, connect: g.connect }), "url");
      expect(resolver).not.toHaveBeenCalled();
      expect(g.calls).toEqual([]);
    },
  );

  it("refuses a redirect to the metadata address before connecting to it", async () => {
    routes.set("/start.safetensors", redirect(302, "http://169.254.169.254/latest/meta-data/x.safetensors"));
    const g = guard();
    const resolver = fakeDns({});
    const e = await refusal(openGuardedDownload(`${origin}/start.safetensors`, policy(), { resolver, connect: g.connect }), "address");
    expect(e.message).toContain("169.254.169.254"); // the host as written in the Location, not a resolved address
    expect(g.calls.map((c) => c.address)).toEqual(["127.0.0.1"]);
    expect(seen.map((s) => s.path)).toEqual(["/start.safetensors"]);
  });

  it("re-checks every hop: private names, unlisted ports, other schemes and credentials", async () => {
    const cases: Array<[string, DownloadRefused["reason"]]> = [
      ["http://intranet.example/x.bin", "address"],
      [`http://127.0.0.1:${port + 1 === 65536 ? 1 : port + 1}/x.bin`, "address"],
      ["file:///etc/passwd", "scheme"],
      ["gopher://example.com/", "scheme"],
      [`http://u:p@127.0.0.1:${port}/x.bin`, "url"],
      ["http://[::1", "url"],
    ];
    for (const [location, reason] of cases) {
      routes.set("/hop", redirect(307, location));
      const g = guard();
      const resolver = fakeDns({ "intranet.example": ["10.20.30.40"] });
      await refusal(openGuardedDownload(`${origin}/hop`, policy(), { resolver, connect: g.connect }), reason);
      expect(g.calls).toHaveLength(1);
    }
  });

  it("stops after maxRedirects", async () => {
    routes.set("/loop/*", (req, res) => {
      const n = Number(req.url!.split("/").pop());
      res.writeHead(302, { Location: `/loop/${n + 1}` }).end();
    });
    const g = guard();
    await refusal(openGuardedDownload(`${origin}/loop/0`, policy({ maxRedirects: 3 }), { connect: g.connect }), "redirects");
    expect(seen.map((s) => s.path)).toEqual(["/loop/0", "/loop/1", "/loop/2", "/loop/3"]);
    await refusal(openGuardedDownload(`${origin}/loop/0`, policy({ maxRedirects: 0 }), { connect: g.connect }), "redirects");
  });

  it("refuses a non-2xx final status, with the code in the message", async () => {
    routes.set("/gone.bin", (_req, res) => res.writeHead(410).end("gone"));
    const e404 = await refusal(openGuardedDownload(`${origin}/missing.bin`, policy(), { connect: guard().connect }), "status");
    expect(e404.message).toContain("404");
    const e410 = await refusal(openGuardedDownload(`${origin}/gone.bin`, policy(), { connect: guard().connect }), "status");
    expect(e410.message).toContain("410");
    routes.set("/nowhere", (_req, res) => res.writeHead(302).end());
    await refusal(openGuardedDownload(`${origin}/nowhere`, policy(), { connect: guard().connect }), "status");
  });
});

describe("openGuardedDownload: file names and sizes", () => {
  it("refuses disallowed names from the URL or Content-Disposition", async () => {
    routes.set("/files/*", serveBytes(Buffer.from("x")));
    routes.set("/cd/traversal.safetensors", serveBytes(Buffer.from("x"), { "Content-Disposition": 'attachment; filename="../x.safetensors"' }));
    routes.set("/cd/exe.safetensors", serveBytes(Buffer.from("x"), { "Content-Disposition": "attachment; filename*=UTF-8''evil.exe" }));
    routes.set("/cd/slash.safetensors", serveBytes(Buffer.from("x"), { "Content-Disposition": "attachment; filename*=UTF-8''a%2Fb.safetensors" }));
    for (const path of ["/files/model.exe", "/files/model", "/files/", "/files/a%2F..%2Fb.safetensors", "/files/bad%ZZ.bin", "/files/x.safetensors%00.exe", "/cd/traversal.safetensors", "/cd/exe.safetensors", "/cd/slash.safetensors"]) {
      await refusal(openGuardedDownload(`${origin}${path}`, policy(), { connect: guard().connect }), "extension");
    }
  });

  it("refuses a Content-Length over maxBytes before reading the body", async () => {
    routes.set("/big.safetensors", serveBytes(Buffer.alloc(5000)));
    const e = await refusal(openGuardedDownload(`${origin}/big.safetensors`, policy({ maxBytes: 4999 }), { connect: guard().connect }), "size");
    expect(e.message).toContain("5000");
  });

  it("errors the stream with DownloadRefused('size') when a body without Content-Length grows past maxBytes", async () => {
    let closed = false;
    routes.set("/stream.bin", (req, res) => {
      res.writeHead(200, { "Content-Type": "application/octet-stream" });
      const timer = setInterval(() => res.write(Buffer.alloc(400)), 5);
      req.socket.on("close", () => {
        closed = true;
        clearInterval(timer);
      });
    });
    const d = await openGuardedDownload(`${origin}/stream.bin`, policy({ maxBytes: 1000 }), { connect: guard().connect });
    expect(d.contentLength).toBeUndefined();
    const e = await failure(collect(d.stream));
    expect(e).toBeInstanceOf(DownloadRefused);
    expect((e as DownloadRefused).reason).toBe("size");
    await vi.waitFor(() => expect(closed).toBe(true));
  });

  it("errors the stream when the body is shorter than its Content-Length", async () => {
    routes.set("/short.bin", (req, res) => {
      res.writeHead(200, { "Content-Length": 100 });
      res.write(Buffer.alloc(50), () => setTimeout(() => req.socket.destroy(), 20));
    });
    const d = await openGuardedDownload(`${origin}/short.bin`, policy(), { connect: guard().connect });
    const e = await failure(collect(d.stream));
    expect(e).toBeInstanceOf(Error);
    expect(e).not.toBeInstanceOf(DownloadRefused);
  });

  it("checkFileName", () => {
    const p = policy();
    for (const ok of ["model.safetensors", "Model.SafeTensors", "v1-5-pruned-emaonly.ckpt", "config.yaml", "weights.PT", "modèle v2.bin", "a.b.pth"]) {
      expect(() => checkFileName(ok, p), ok).not.toThrow();
    }
    const bad = ["", "model.exe", "model", ".safetensors", "safetensors", "../x.safetensors", "a/b.safetensors", "a\\b.safetensors", "..safetensors", "x..bin", "a\0.bin", "a\n.bin", "a\u202Egpj.bin", "a\u200B.bin", " x.bin", "x.bin ", "x.safetensors.exe", `${"a".repeat(300)}.bin`];
    for (const name of bad) {
      let thrown: unknown;
      try {
        checkFileName(name, p);
      } catch (e) {
        thrown = e;
      }
      expect(thrown, JSON.stringify(name)).toBeInstanceOf(DownloadRefused);
      expect((thrown as DownloadRefused).reason).toBe("extension");
    }
    expect(() => checkFileName("x.gguf", { ...p, allowedExtensions: ["GGUF"] })).not.toThrow();
  });

  it("parses Content-Disposition", () => {
    expect(contentDispositionFileName("attachment")).toBeUndefined();
    expect(contentDispositionFileName('attachment; filename="a \\"b\\".bin"')).toBe('a "b".bin');
    expect(contentDispositionFileName("attachment; filename=plain.ckpt; size=3")).toBe("plain.ckpt");
    expect(contentDispositionFileName("attachment; filename*=iso-8859-1'en'caf%E9.bin")).toBe("café.bin");
    expect(contentDispositionFileName("inline; filename*=UTF-8''%E2%82%AC.bin; filename=euro.bin")).toBe("€.bin");
    expect(contentDispositionFileName("attachment; filename*=UTF-8''%FF.bin; filename=fallback.bin")).toBe("fallback.bin");
    expect(() => contentDispositionFileName("attachment; filename*=UTF-8''%FF.bin")).toThrow(DownloadRefused);
  });
});

describe("openGuardedDownload: timeouts and aborts", () => {
  it("errors the stream with an idle DownloadTimeout when the body stalls", async () => {
    routes.set("/stall.bin", (_req, res) => {
      res.writeHead(200, { "Content-Length": 1000 });
      res.write(Buffer.alloc(10));
    });
    const d = await openGuardedDownload(`${origin}/stall.bin`, policy({ idleTimeoutMs: 150 }), { connect: guard().connect });
    const started = Date.now();
    const e = await failure(collect(d.stream));
    expect(e).toBeInstanceOf(DownloadTimeout);
    expect((e as DownloadTimeout).phase).toBe("idle");
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
  });

  it("does not count time the consumer spends not reading (back-pressure) as idle", async () => {
    const body = randomBytes(512 * 1024);
    routes.set("/fast.bin", serveBytes(body));
    const d = await openGuardedDownload(`${origin}/fast.bin`, policy({ idleTimeoutMs: 100 }), { connect: guard().connect });
    const chunks: Buffer[] = [];
    for await (const chunk of d.stream) {
      if (chunks.length === 0) await sleep(400);
      chunks.push(chunk as Buffer);
    }
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
  });

  it("rejects with a connect DownloadTimeout when the response headers never come", async () => {
    routes.set("/silent.bin", () => undefined);
    const e = await failure(openGuardedDownload(`${origin}/silent.bin`, policy({ connectTimeoutMs: 150 }), { connect: guard().connect }));
    expect(e).toBeInstanceOf(DownloadTimeout);
    expect((e as DownloadTimeout).phase).toBe("connect");
  });

  it("applies the connect timeout to a resolver that hangs", async () => {
    const g = guard();
    const e = await failure(openGuardedDownload("https://slow-dns.example/m.bin", policy({ connectTimeoutMs: 100 }), { resolver: () => new Promise(() => undefined), connect: g.connect }));
    expect(e).toBeInstanceOf(DownloadTimeout);
    expect(g.calls).toEqual([]);
  });

  it("an abort signal destroys the stream mid-body and closes the connection", async () => {
    let closed = false;
    routes.set("/slow.bin", (req, res) => {
      res.writeHead(200, { "Content-Length": 1_000_000 });
      res.write(Buffer.alloc(100));
      req.socket.on("close", () => (closed = true));
    });
    const ac = new AbortController();
    const d = await openGuardedDownload(`${origin}/slow.bin`, policy(), { connect: guard().connect, signal: ac.signal });
    const got = collect(d.stream);
    await sleep(50);
    ac.abort();
    const e = await failure(got);
    expect((e as Error).name).toBe("AbortError");
    expect(d.stream.destroyed).toBe(true);
    await vi.waitFor(() => expect(closed).toBe(true));
  });

  it("an abort signal rejects before connecting and while waiting for headers", async () => {
    const g = guard();
    const pre = new AbortController();
    pre.abort();
    expect(((await failure(openGuardedDownload(`${origin}/x.bin`, policy(), { connect: g.connect, signal: pre.signal }))) as Error).name).toBe("AbortError");
    expect(g.calls).toEqual([]);

    routes.set("/wait.bin", () => undefined);
    const ac = new AbortController();
    const p = openGuardedDownload(`${origin}/wait.bin`, policy(), { connect: g.connect, signal: ac.signal });
    await vi.waitFor(() => expect(seen.map((s) => s.path)).toContain("/wait.bin"));
    ac.abort();
    expect(((await failure(p)) as Error).name).toBe("AbortError");
  });
});
