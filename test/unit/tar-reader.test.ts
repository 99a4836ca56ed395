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
});
