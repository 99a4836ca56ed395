import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

const FAULTS = {
  SlowDown: { status: 503, message: "Please reduce your request rate." },
  AccessDenied: { status: 403, message: "Access Denied" },
} as const;

/**
 * An HTTP proxy in front of the embedded S3 that can answer as S3 does when it sheds load
 * (503 SlowDown) or refuses the credentials (403 AccessDenied), to test what clients see then.
 * Counts the requests it refused.
 */
export interface S3FaultProxy {
  endpoint: string;
  /** While set, every request gets this S3 error without reaching the store. */
  fault: keyof typeof FAULTS | null;
  refused: number;
  stop(): Promise<void>;
}

export async function startS3FaultProxy(target: string): Promise<S3FaultProxy> {
  const upstream = new URL(target);
  const proxy: S3FaultProxy = { endpoint: "", fault: null, refused: 0, stop: async () => undefined };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (proxy.fault) {
      const { status, message } = FAULTS[proxy.fault];
      proxy.refused++;
      req.resume();
      res.writeHead(status, { "content-type": "application/xml" });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${proxy.fault}</Code><Message>${message}</Message></Error>`);
      return;
    }
    const forwarded = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    forwarded.on("error", () => res.destroy());
    req.pipe(forwarded);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.stop = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}
