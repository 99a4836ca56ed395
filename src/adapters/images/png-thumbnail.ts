import { PNG } from "pngjs";

/**
 * A PNG no larger than `maxSide` on either side (box-filtered), or undefined when the bytes are not
 * a PNG pngjs can read. Live previews are stored small: they are looked at, not kept.
 */
export function pngThumbnail(bytes: Buffer, maxSide: number): Buffer | undefined {
  let src: PNG;
  try {
    src = PNG.sync.read(bytes);
  } catch {
    return undefined;
  }
  if (src.width <= maxSide && src.height <= maxSide) return bytes;
  const scale = Math.max(src.width, src.height) / maxSide;
  const width = Math.max(1, Math.round(src.width / scale));
  const height = Math.max(1, Math.round(src.height / scale));
  const out = new PNG({ width, height });
  for (let y = 0; y < height; y++) {
    const y0 = Math.floor(y * scale);
    const y1 = Math.max(y0 + 1, Math.min(src.height, Math.floor((y + 1) * scale)));
    for (let x = 0; x < width; x++) {
      const x0 = Math.floor(x * scale);
      const x1 = Math.max(x0 + 1, Math.min(src.width, Math.floor((x + 1) * scale)));
      const sum = [0, 0, 0, 0];
      for (let sy = y0; sy < y1; sy++) {
        for (let sx = x0; sx < x1; sx++) {
          const i = (sy * src.width + sx) * 4;
          for (let c = 0; c < 4; c++) sum[c]! += src.data[i + c]!;
        }
      }
      const n = (y1 - y0) * (x1 - x0);
      const o = (y * width + x) * 4;
      for (let c = 0; c < 4; c++) out.data[o + c] = Math.round(sum[c]! / n);
    }
  }
  return PNG.sync.write(out);
}
