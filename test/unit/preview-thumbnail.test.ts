import sharp from "sharp";
import { describe, expect, it } from "vitest";
import { previewThumbnail } from "../../src/adapters/images/preview-thumbnail.js";

const picture = (width: number, height: number) => sharp({ create: { width, height, channels: 3, background: { r: 200, g: 40, b: 90 } } });

describe("previewThumbnail", () => {
  it("shrinks PNG, JPEG and WebP previews to a PNG of at most maxSide, keeping the aspect", async () => {
    for (const format of ["png", "jpeg", "webp"] as const) {
      const out = await previewThumbnail(await picture(512, 256)[format]().toBuffer(), 128);
      expect(out, format).toBeDefined();
      expect(await sharp(out!).metadata(), format).toMatchObject({ format: "png", width: 128, height: 64 });
    }
  });

  it("never enlarges a small preview", async () => {
    const out = await previewThumbnail(await picture(40, 30).png().toBuffer(), 128);
    expect(await sharp(out!).metadata()).toMatchObject({ width: 40, height: 30 });
  });

  it("refuses what is not a PNG, JPEG or WebP preview: SVG, GIF, garbage, truncated bytes", async () => {
    const svg = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>`);
    const gif = await picture(16, 16).gif().toBuffer();
    const jpeg = await picture(256, 256).jpeg().toBuffer();
    for (const [what, bytes] of [["svg", svg], ["gif", gif], ["garbage", Buffer.from("not an image at all")], ["truncated jpeg", jpeg.subarray(0, 200)]] as const) {
      expect(await previewThumbnail(bytes, 128), what).toBeUndefined();
    }
  });
});
