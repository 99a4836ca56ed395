import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ObjectStore } from "../../src/adapters/storage/object-store.js";
import { tar } from "../../src/local/emulator-training.js";
import type { EventLog } from "../../src/services/event-log.js";
import { MAX_PRODUCED_FILES, ProducedCheckpoints, UnusableArtifact } from "../../src/services/produced-checkpoints.js";

/** An in-memory store: enough of ObjectStore for reading artifacts and writing model files. */
function memoryStore(objects: Map<string, Buffer>, opts: { failUploadsAfterBytes?: number } = {}) {
  const store = {
    async getObjectStream(key: string) {
      const b = objects.get(key);
      if (!b) throw Object.assign(new Error(`no such key ${key}`), { name: "NoSuchKey" });
      const pieces: Buffer[] = [];
      for (let i = 0; i < b.length; i += 4096) pieces.push(b.subarray(i, i + 4096));
      return Readable.from(pieces);
    },
    async uploadStream(key: string, body: Readable) {
      const parts: Buffer[] = [];
      let size = 0;
      for await (const chunk of body) {
        size += (chunk as Buffer).length;
        if (opts.failUploadsAfterBytes !== undefined && size > opts.failUploadsAfterBytes) throw new Error("upload refused by the store");
        parts.push(chunk as Buffer);
      }
      objects.set(key, Buffer.concat(parts));
      return { size };
    },
    async head(key: string) {
      const b = objects.get(key);
      return b ? { size: b.length } : undefined;
    },
    async deletePrefix(prefix: string) {
      let n = 0;
      for (const k of [...objects.keys()]) if (k.startsWith(prefix)) n += Number(objects.delete(k));
      return n;
    },
  };
  return store as unknown as ObjectStore;
}

const produced = (objects: Map<string, Buffer>, opts?: { failUploadsAfterBytes?: number }) => new ProducedCheckpoints(memoryStore(objects, opts), {} as EventLog, pino({ level: "silent" }));
const ID = "00000000-0000-4000-8000-000000000001";

describe("produced checkpoints from hostile artifacts", () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  beforeEach(() => {
    unhandled.length = 0;
    process.on("unhandledRejection", onUnhandled);
  });
  afterEach(() => {
    process.off("unhandledRejection", onUnhandled);
  });

  it("stores the model files of a good artifact in archive order", async () => {
    const objects = new Map([["out/model.tar.gz", gzipSync(tar([{ name: "a.safetensors", content: Buffer.from("A") }, { name: "notes.txt", content: Buffer.from("n") }, { name: "b.ckpt", content: Buffer.from("BB") }]))]]);
    const files = await produced(objects).storeModelFiles([{ key: "out/model.tar.gz", kind: "tar.gz" }], "Lora", ID, "m");
    expect(files.map((f) => [f.name, f.size])).toEqual([
      ["m.safetensors", 1],
      ["m.ckpt", 2],
    ]);
  });

  it("fails with UnusableArtifact on a truncated gzip, a corrupt tar and a missing object", async () => {
    const good = gzipSync(tar([{ name: "a.safetensors", content: Buffer.alloc(50_000, 7) }]));
    const objects = new Map([
      ["cut.tar.gz", good.subarray(0, good.length - 40)],
      ["junk.tar", Buffer.alloc(2048, 0x41)],
    ]);
    const p = produced(objects);
    await expect(p.storeModelFiles([{ key: "cut.tar.gz", kind: "tar.gz" }], "Lora", ID, "m")).rejects.toThrow(UnusableArtifact);
    await expect(p.storeModelFiles([{ key: "junk.tar", kind: "tar" }], "Lora", ID, "m")).rejects.toThrow(UnusableArtifact);
    await expect(p.storeModelFiles([{ key: "gone.tar.gz", kind: "tar.gz" }], "Lora", ID, "m")).rejects.toThrow(UnusableArtifact);
  });

  it(`refuses an artifact of more than ${MAX_PRODUCED_FILES} model files`, async () => {
    const many = tar(Array.from({ length: MAX_PRODUCED_FILES + 5 }, (_, i) => ({ name: `m${i}.safetensors`, content: Buffer.from("x") })));
    const objects = new Map([["many.tar", many]]);
    await expect(produced(objects).storeModelFiles([{ key: "many.tar", kind: "tar" }], "Lora", ID, "m")).rejects.toThrow(/more than 20 model files/);
  });

  it("a failing upload ends the read with its error: no stall, no unhandled rejection", async () => {
    const archive = tar([
      { name: "a.safetensors", content: Buffer.alloc(300_000, 1) },
      { name: "b.safetensors", content: Buffer.alloc(300_000, 2) },
    ]);
    const objects = new Map([["big.tar", archive]]);
    await expect(produced(objects, { failUploadsAfterBytes: 10_000 }).storeModelFiles([{ key: "big.tar", kind: "tar" }], "Lora", ID, "m")).rejects.toThrow(/upload refused|closed early/);
    await new Promise((r) => setTimeout(r, 50));
    expect(unhandled).toEqual([]);
  });
});
