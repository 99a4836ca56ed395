import type { Writable } from "node:stream";

/**
 * A small streaming reader of POSIX tar archives (ustar, GNU long names, PAX `path` and `size`), enough for
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

/** Sizes beyond this cannot be counted exactly in a JavaScript number: a hostile header, not an artifact. */
const MAX_ENTRY_BYTES = Number.MAX_SAFE_INTEGER;

function numberField(b: Buffer): number {
  // GNU base-256 for large sizes; 0xff marks a negative number, which no size or checksum may be.
  if (b[0]! & 0x80) {
    if (b[0] === 0xff) throw new TarFormatError("negative number field");
    let n = b[0]! & 0x7f;
    for (let i = 1; i < b.length; i++) n = n * 256 + b[i]!;
    if (n > MAX_ENTRY_BYTES) throw new TarFormatError("number field too large");
    return n;
  }
  const text = cString(b).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`bad number field ${JSON.stringify(text.slice(0, 20))}`);
  return Number.parseInt(text, 8);
}

function checksumOk(h: Buffer): boolean {
  const stored = numberField(h.subarray(148, 156));
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum === stored;
}

/** The `path` and `size` records of a PAX extended header ("<length> <key>=<value>\n" each). */
function paxRecords(data: Buffer): { path?: string; size?: number } {
  const out: { path?: string; size?: number } = {};
  let offset = 0;
  while (offset < data.length) {
    const space = data.indexOf(0x20, offset);
    const digits = space === -1 ? "" : data.toString("ascii", offset, space);
    const length = /^[0-9]{1,7}$/.test(digits) ? Number(digits) : NaN;
    if (!(length > digits.length + 1) || offset + length > data.length || data[offset + length - 1] !== 0x0a) throw new TarFormatError("malformed PAX record");
    const record = data.toString("utf8", space + 1, offset + length - 1);
    const eq = record.indexOf("=");
    const key = eq > 0 ? record.slice(0, eq) : "";
    if (key === "path") out.path = record.slice(eq + 1);
    if (key === "size") {
      const size = record.slice(eq + 1);
      if (!/^[0-9]{1,16}$/.test(size) || Number(size) > MAX_ENTRY_BYTES) throw new TarFormatError("bad PAX size");
      out.size = Number(size);
    }
    offset += length;
  }
  return out;
}

/** Writes with backpressure; a destination that closes or fails (an aborted upload) ends the read instead of stalling it. */
async function writeTo(sink: Writable, chunk: Buffer): Promise<void> {
  if (sink.destroyed || sink.writableEnded) throw new Error("the destination of a tar entry closed early");
  if (sink.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const done = (e?: Error) => {
      sink.off("drain", onDrain).off("error", done).off("close", onClose);
      if (e) reject(e);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new Error("the destination of a tar entry closed early"));
    sink.on("drain", onDrain).on("error", done).on("close", onClose);
  });
}

const MAX_META_BYTES = 1024 * 1024;
/** Headers read before giving up: an artifact holds a handful of files, a hostile one could hold millions of empty ones. */
export const MAX_TAR_ENTRIES = 10_000;

/**
 * Reads the archive; `onFile` decides per regular file whether (and where) its data goes. Memory
 * stays bounded (one header, metadata up to 1 MiB, one chunk in flight); a truncated archive, one
 * without its end-of-archive blocks, or one of more than `maxEntries` headers is a TarFormatError.
 */
export async function readTar(source: AsyncIterable<Buffer | Uint8Array | string>, onFile: (header: TarFileHeader) => Writable | undefined, { maxEntries = MAX_TAR_ENTRIES } = {}): Promise<number> {
  const reader = new ByteReader(source[Symbol.asyncIterator]());
  let files = 0;
  let entries = 0;
  let nextName: string | undefined;
  let nextSize: number | undefined;
  for (;;) {
    const h = await reader.read(512);
    if (!h) throw new TarFormatError("truncated (no end-of-archive marker)");
    if (h.every((b) => b === 0)) break;
    if (++entries > maxEntries) throw new TarFormatError(`more than ${maxEntries} entries`);
    if (!checksumOk(h)) throw new TarFormatError("header checksum mismatch");
    const type = String.fromCharCode(h[156]!);
    const headerSize = numberField(h.subarray(124, 136));
    // A PAX `size` (archives of files of 8 GiB and more) replaces the header's for the next file only.
    const size = type === "L" || type === "x" ? headerSize : (nextSize ?? headerSize);
    const padded = Math.ceil(size / 512) * 512;
    const magic = h.toString("ascii", 257, 262);
    const prefix = magic === "ustar" ? cString(h.subarray(345, 500)) : "";
    const name = nextName ?? (prefix ? `${prefix}/${cString(h.subarray(0, 100))}` : cString(h.subarray(0, 100)));
    if (type === "L" || type === "x") {
      if (size > MAX_META_BYTES) throw new TarFormatError("oversized metadata entry");
      const data = (await reader.read(padded)) ?? Buffer.alloc(0);
      if (type === "L") nextName = cString(data.subarray(0, size));
      else {
        const pax = paxRecords(data.subarray(0, size));
        nextName = pax.path ?? nextName;
        nextSize = pax.size ?? nextSize;
      }
      continue;
    }
    nextName = undefined;
    nextSize = undefined;
    if (type === "0" || type === "\0" || type === "7") {
      files++;
      const sink = onFile({ name, size });
      if (sink) {
        for await (const chunk of reader.stream(size)) await writeTo(sink, chunk);
        sink.end();
        await reader.skip(padded - size);
        continue;
      }
    }
    await reader.skip(padded);
  }
  return files;
}
