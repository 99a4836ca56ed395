import { PassThrough, Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { readTar, TarFormatError } from "../../src/adapters/storage/tar-reader.js";
import { tar } from "../../src/local/emulator-training.js";

/** Reads every regular file into memory, feeding the archive in small uneven chunks. */
async function entries(archive: Buffer, chunk = 37): Promise<Array<{ name: string; data: string }>> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < archive.length; i += chunk) pieces.push(archive.subarray(i, i + chunk));
  const out: Array<{ name: string; data: string }> = [];
  await readTar(Readable.from(pieces), (h) => {
    const pass = new PassThrough();
    const parts: Buffer[] = [];
    pass.on("data", (d: Buffer) => parts.push(d));
    pass.on("end", () => out.push({ name: h.name, data: Buffer.concat(parts).toString() }));
    return pass;
  });
  await new Promise((r) => setImmediate(r));
  return out;
}

function header(name: string, size: number, type: string): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, "utf8");
  h.write("0000644\0", 100);
  h.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  h.write("00000000000\0", 136);
  h.write("        ", 148);
  h.write(type, 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}
const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

describe("tar reader", () => {
  it("reads ustar entries across chunk boundaries", async () => {
    const archive = tar([
      { name: "model.safetensors", content: Buffer.from("x".repeat(1500)) },
      { name: "dir/model.yaml", content: Buffer.from("yaml: 1") },
    ]);
    expect(await entries(archive)).toEqual([
      { name: "model.safetensors", data: "x".repeat(1500) },
      { name: "dir/model.yaml", data: "yaml: 1" },
    ]);
  });

  it("uses GNU long names and PAX paths, and skips entries the caller does not want", async () => {
    const long = `${"a".repeat(150)}/model.safetensors`;
    const record = `path=${"p".repeat(10)}.ckpt\n`;
    // "<length> <record>", the length counting its own two digits and the space.
    const pax = Buffer.from(`${record.length + 3} ${record}`);
    const archive = Buffer.concat([
      header("././@LongLink", long.length + 1, "L"),
      pad(Buffer.from(`${long}\0`)),
      header("short", 3, "0"),
      pad(Buffer.from("abc")),
      header("PaxHeader", pax.length, "x"),
      pad(pax),
      header("ignored", 2, "0"),
      pad(Buffer.from("de")),
      header("dir/", 0, "5"),
      Buffer.alloc(1024),
    ]);
    const seen = await entries(archive, 100);
    expect(seen.map((e) => e.name)).toEqual([long, `${"p".repeat(10)}.ckpt`]);
    expect(seen.map((e) => e.data)).toEqual(["abc", "de"]);
    let skipped = 0;
    await readTar(Readable.from([archive]), () => {
      skipped++;
      return undefined;
    });
    expect(skipped).toBe(2);
  });

  it("refuses corrupt or truncated archives", async () => {
    const archive = tar([{ name: "m.safetensors", content: Buffer.from("y".repeat(2000)) }]);
    const corrupt = Buffer.from(archive);
    corrupt[10] = corrupt[10]! ^ 0xff;
    await expect(entries(corrupt)).rejects.toBeInstanceOf(TarFormatError);
    await expect(entries(archive.subarray(0, 1200))).rejects.toThrow(/truncated/);
  });

  it("refuses an archive cut at an entry boundary (no end-of-archive marker)", async () => {
    const archive = tar([{ name: "a.safetensors", content: Buffer.from("abc") }]);
    await expect(entries(archive.subarray(0, archive.length - 1024))).rejects.toThrow(/no end-of-archive marker/);
  });

  it("fails fast on huge or negative declared sizes without buffering them", async () => {
    const huge = header("big.safetensors", 0, "0");
    // GNU base-256: 2^62 bytes, more than a JavaScript number counts exactly.
    huge.fill(0, 124, 136);
    huge[124] = 0x80;
    huge[128] = 0x40;
    const fixSum = (h: Buffer) => {
      h.write("        ", 148);
      let sum = 0;
      for (const b of h) sum += b;
      h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
      return h;
    };
    await expect(entries(Buffer.concat([fixSum(huge), Buffer.alloc(1024)]))).rejects.toThrow(/too large/);
    const negative = header("neg.safetensors", 0, "0");
    negative.fill(0xff, 124, 136);
    await expect(entries(Buffer.concat([fixSum(negative), Buffer.alloc(1024)]))).rejects.toThrow(/negative/);
    // A plausible 8 GiB declared over a few bytes: truncated, found while streaming.
    const liar = header("liar.safetensors", 8 * 1024 ** 3, "0");
    await expect(entries(Buffer.concat([liar, Buffer.from("abc")]))).rejects.toThrow(/truncated/);
  });

  it("takes a PAX size over the header's, and refuses malformed PAX records", async () => {
    const content = Buffer.from("hello");
    const record = `size=${content.length}\n`;
    const pax = Buffer.from(`${record.length + 3} ${record}`);
    const archive = Buffer.concat([header("PaxHeader", pax.length, "x"), pad(pax), header("m.safetensors", 0, "0"), pad(content), Buffer.alloc(1024)]);
    expect(await entries(archive)).toEqual([{ name: "m.safetensors", data: "hello" }]);
    const bad = Buffer.from("99 path=x.ckpt\n");
    await expect(entries(Buffer.concat([header("PaxHeader", bad.length, "x"), pad(bad), Buffer.alloc(1024)]))).rejects.toBeInstanceOf(TarFormatError);
  });

  it("refuses archives of too many entries", async () => {
    const many = tar(Array.from({ length: 30 }, (_, i) => ({ name: `f${i}`, content: Buffer.alloc(0) })));
    await expect(readTar(Readable.from([many]), () => undefined, { maxEntries: 20 })).rejects.toThrow(/more than 20 entries/);
    expect(await readTar(Readable.from([many]), () => undefined, { maxEntries: 30 })).toBe(30);
  });

  it("ends with an error, not a stall, when an entry's destination closes early", async () => {
    const archive = tar([{ name: "m.safetensors", content: Buffer.alloc(200_000, 1) }]);
    const read = readTar(Readable.from([archive]), () => {
      const pass = new PassThrough({ highWaterMark: 1024 });
      // An upload that fails after its first chunk: nobody reads the rest.
      pass.once("data", () => pass.destroy());
      return pass;
    });
    await expect(read).rejects.toThrow(/closed early/);
    const destroyed = readTar(Readable.from([archive]), () => {
      const pass = new PassThrough();
      pass.on("error", () => undefined);
      pass.destroy(new Error("upload refused"));
      return pass;
    });
    await expect(destroyed).rejects.toThrow(/closed early|upload refused/);
  });
});
