import sharp from "sharp";

/** Formats WebUI servers send live previews in (A1111's `live_previews_image_format`: png, jpeg or webp). */
const PREVIEW_FORMATS = new Set(["png", "jpeg", "webp"]);
/** A preview larger than this (pixels) is not decoded: previews are a few hundred pixels on a side. */
const MAX_INPUT_PIXELS = 4096 * 4096;

/**
 * A PNG no larger than `maxSide` on either side (aspect kept, never enlarged) of a PNG, JPEG or WebP
 * live preview; undefined for anything else or anything that does not decode. Previews are stored
 * small: they are looked at, not kept.
 */
export async function previewThumbnail(bytes: Buffer, maxSide: number): Promise<Buffer | undefined> {
  try {
    const image = sharp(bytes, { limitInputPixels: MAX_INPUT_PIXELS, failOn: "error" });
    const { format } = await image.metadata();
    if (!format || !PREVIEW_FORMATS.has(format)) return undefined;
    return await image.resize(maxSide, maxSide, { fit: "inside", withoutEnlargement: true }).png({ compressionLevel: 9 }).toBuffer();
  } catch {
    return undefined;
  }
}
