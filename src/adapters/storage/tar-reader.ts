import { once } from "node:events";
import type { Writable } from "node:stream";

/**
 * A small streaming reader of POSIX tar archives (ustar, GNU long names, PAX `path`), enough for
 * SageMaker model artifacts. Entries are read in order; the data of a regular file goes to the
 * writable `onFile` returns (with backpressure), or is skipped. Nothing is written to disk and entry
 * names are only reported, never used as paths.
 */
export interface TarFileHeader {
  name: string;
  size: number;
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(`not a valid tar archive: ${message}`);
    this.name = "TarFormatError";
  }
}

/** Pulls exact byte counts out of an async iterable of chunks. */
class ByteReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private done = false;

  constructor(private readonly source: AsyncIterator<Buffer | Uint8Array | string>) {}

  private async fill(n: number): Promise<void> {
    while (this.length < n && !this.done) {
      const next = await this.source.next();
      if (next.done) {
        this.done = true;
        break;
      }
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
      if (chunk.length === 0) continue;
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.length = rest.length;
    return out;
  }

  /** Exactly n bytes; undefined at a clean end of input; an error on a truncated read. */
  async read(n: number): Promise<Buffer | undefined> {
    await this.fill(n);
    if (this.length === 0 && this.done) return undefined;
    if (this.length < n) throw new TarFormatError(`truncated (wanted ${n} bytes, ${this.length} left)`);
    return this.take(n);
  }

  /** Up to n bytes, chunk by chunk. */
  async *stream(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.length === 0) await this.fill(1);
      if (this.length === 0) throw new TarFormatError(`truncated (${left} bytes of an entry missing)`);
      const piece = this.take(Math.min(left, this.length));
      left -= piece.length;
      yield piece;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.stream(n)) void _;
  }
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.toString("utf8", 0, end === -1 ? b.length : end);
}

function numberField(b: Buffer): number {
  // GNU base-256 for large sizes.
  if (b[0]! & 0x80) {
    let n = 0;
    for (let i = 1; i < b.length; i++) n = n * 256 + b[i]!;
    return n;
  }
  const text = cString(b).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`bad number field ${JSON.stringify(text)}`);
  return Number.parseInt(text, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = numberField(h.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum === stored;
}

function paxPath(data: Buffer): string | undefined {
  let offset = 0;
  let found: string | undefined;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    if (space === -1) break;
    const length = Number.parseInt(data.toString("ascii", offset, space), 10);
    if (!Number.isFinite(length) || length <= 0) break;
    const record = data.toString("utf8", space + 1, offset + length - 1);
    const eq = record.indexOf("=");
    if (eq > 0 && record.slice(0, eq) === "path") found = record.slice(eq + 1);
    offset += length;
  }
  return found;
}

const MAX_META_BYTES = 1024 * 1024;

/** Reads the archive; `onFile` decides per regular file whether (and where) its data goes. */
export async function readTar(source: AsyncIterable<Buffer | Uint8Array | string>, onFile: (header: TarFileHeader) => Writable | undefined): Promise<number> {
  const reader = new ByteReader(source[Symbol.asyncIterator]());
  let files = 0;
  let nextName: string | undefined;
  for (;;) {
    const h = await reader.read(512);
    if (!h) break;
    if (h.every((b) => b === 0)) break;
    if (!checksumOk(h)) throw new TarFormatError("header checksum mismatch");
    const size = numberField(h.subarray(124, 136));
    const type = String.fromCharCode(h[156]!);
    const padded = Math.ceil(size / 512) * 512;
    const magic = h.toString("ascii", 257, 262);
    const prefix = magic === "ustar" ? cString(h.subarray(345, 500)) : "";
    const name = nextName ?? (prefix ? `${prefix}/${cString(h.subarray(0, 100))}` : cString(h.subarray(0, 100)));
    if (type === "L" || type === "x") {
      if (size > MAX_META_BYTES) throw new TarFormatError("oversized metadata entry");
      const data = (await reader.read(padded)) ?? Buffer.alloc(0);
      nextName = type === "L" ? cString(data.subarray(0, size)) : (paxPath(data.subarray(0, size)) ?? nextName);
      continue;
    }
    nextName = undefined;
    if (type === "0" || type === "\0" || type === "7") {
      files++;
      const sink = onFile({ name, size });
      if (sink) {
        for await (const chunk of reader.stream(size)) {
          if (!sink.write(chunk)) await once(sink, "drain");
        }
        sink.end();
        await reader.skip(padded - size);
        continue;
      }
    }
    await reader.skip(padded);
  }
  return files;
}
