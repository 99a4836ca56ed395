import { createHash } from "node:crypto";
import { PNG } from "pngjs";

/**
 * Test cards: the pictures the SageMaker emulator returns instead of generated images. A card is
 * deterministic for what it is given (the same spec gives the same PNG bytes), has a background
 * pattern derived from a hash of the generation parameters, and carries legible text saying it is
 * emulated and what was asked for. Text is drawn with the 5×7 bitmap font below (there is no font
 * rasteriser), scaled up with the picture.
 */

/** An RGBA picture. */
export interface Raster {
  width: number;
  height: number;
  data: Buffer;
}

/** Cards are rendered at most this many pixels on a side; larger requests are scaled down proportionally. */
export const MAX_RENDER_SIDE = 1024;
/** Progress previews are at most this many pixels on a side. */
export const PREVIEW_SIDE = 128;

/**
 * 5×7 glyphs for ASCII 32..126, one string of five columns each (two hex digits a column, bit 0 the
 * top row), in the layout of the classic HD44780-style LCD font; g, j, p, q and y use an eighth row
 * for their descenders.
 */
const FONT = [
  "0000000000", "00005f0000", "0007000700", "147f147f14", "242a7f2a12", "2313086462", "3649552250", "0005030000", // space ! " # $ % & '
  "001c224100", "0041221c00", "082a1c2a08", "08083e0808", "0050300000", "0008080800", "0060600000", "2010080402", // ( ) * + , - . /
  "3e5149453e", "00427f4000", "4261514946", "2141454b31", "1814127f10", "2745454539", "3c4a494930", "0171090503", // 0-7
  "3649494936", "064949291e", "0036360000", "0056360000", "0008142241", "1414141414", "4122140800", "0201510906", // 8 9 : ; < = > ?
  "324979413e", "7e1111117e", "7f49494936", "3e41414122", "7f4141221c", "7f49494941", "7f09090101", "3e41415132", // @ A-G
  "7f0808087f", "00417f4100", "2040413f01", "7f08142241", "7f40404040", "7f0204027f", "7f0408107f", "3e4141413e", // H-O
  "7f09090906", "3e4151215e", "7f09192946", "4649494931", "01017f0101", "3f4040403f", "1f2040201f", "7f2018207f", // P-W
  "6314081463", "0304780403", "6151494543", "007f414100", "0204081020", "0041417f00", "0402010204", "4040404040", // X Y Z [ \ ] ^ _
  "0001020400", "2054545478", "7f48444438", "3844444420", "384444487f", "3854545418", "087e090102", "18a4a4a47c", // ` a-g
  "7f08040478", "00447d4000", "0080847d00", "007f102844", "00417f4000", "7c04180478", "7c08040478", "3844444438", // h-o
  "fc24242418", "18242424fc", "7c08040408", "4854545420", "043f444020", "3c4040207c", "1c2040201c", "3c4030403c", // p-w
  "4428102844", "1ca0a0a07c", "4464544c44", "0008364100", "00007f0000", "0041360800", "0804081008", // x y z { | } ~
];
/** The em dash of "EMULATED — not a real generation": a full-width bar. */
const EM_DASH = "0808080808";

function glyphColumns(ch: string): string {
  if (ch === "—" || ch === "–") return EM_DASH;
  const code = ch.charCodeAt(0);
  return FONT[code - 32] ?? FONT[31]!; // "?" for anything outside ASCII 32..126
}

const CELL_W = 6; // 5 columns and one of spacing
const CELL_H = 9; // 7 rows, a descender row and one of spacing

type Rgb = readonly [number, number, number];

function fillRect(r: Raster, x0: number, y0: number, w: number, h: number, color: Rgb, alpha = 1): void {
  const xa = Math.max(0, Math.floor(x0));
  const ya = Math.max(0, Math.floor(y0));
  const xb = Math.min(r.width, Math.floor(x0 + w));
  const yb = Math.min(r.height, Math.floor(y0 + h));
  for (let y = ya; y < yb; y++) {
    let i = (y * r.width + xa) * 4;
    for (let x = xa; x < xb; x++, i += 4) {
      if (alpha >= 1) {
        r.data[i] = color[0];
        r.data[i + 1] = color[1];
        r.data[i + 2] = color[2];
      } else {
        r.data[i] = Math.round(r.data[i]! * (1 - alpha) + color[0] * alpha);
        r.data[i + 1] = Math.round(r.data[i + 1]! * (1 - alpha) + color[1] * alpha);
        r.data[i + 2] = Math.round(r.data[i + 2]! * (1 - alpha) + color[2] * alpha);
      }
      r.data[i + 3] = 255;
    }
  }
}

function drawText(r: Raster, x: number, y: number, text: string, scale: number, color: Rgb): void {
  let cx = x;
  for (const ch of text) {
    const cols = glyphColumns(ch);
    for (let c = 0; c < 5; c++) {
      const bits = parseInt(cols.slice(c * 2, c * 2 + 2), 16);
      for (let row = 0; row < 8; row++) if (bits & (1 << row)) fillRect(r, cx + c * scale, y + row * scale, scale, scale, color);
    }
    // Join the em dash to its neighbours' spacing column so it reads as a dash, not a hyphen.
    if (ch === "—") fillRect(r, cx + 5 * scale, y + 3 * scale, scale, scale, color);
    cx += CELL_W * scale;
  }
}

/** Width in pixels of `text` at `scale`. */
export function textWidth(text: string, scale: number): number {
  return [...text].length * CELL_W * scale - scale;
}

/** Word-wraps `text` to lines of at most `max` characters, hard-breaking long words; at most `maxLines`, the last ending in "..." when cut. */
export function wrapText(text: string, max: number, maxLines: number): string[] {
  const lines: string[] = [];
  let rest = text.replace(/\s+/g, " ").trim();
  while (rest.length > 0 && lines.length < maxLines) {
    if (rest.length <= max) {
      lines.push(rest);
      rest = "";
      break;
    }
    let cut = rest.lastIndexOf(" ", max);
    if (cut <= 0) cut = max;
    lines.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  if (rest.length > 0 && lines.length > 0) {
    const last = lines[lines.length - 1]!;
    lines[lines.length - 1] = `${last.slice(0, Math.max(0, max - 3))}...`;
  }
  return lines;
}

function hsl(h: number, s: number, l: number): Rgb {
  const k = (n: number) => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => Math.round(255 * (l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)))));
  return [f(0), f(8), f(4)];
}

/** The rendered size for a requested size: scaled down proportionally so neither side exceeds `maxSide`. */
export function renderedSize(width: number, height: number, maxSide = MAX_RENDER_SIDE): { width: number; height: number } {
  const factor = Math.min(1, maxSide / Math.max(width, height));
  return { width: Math.max(1, Math.round(width * factor)), height: Math.max(1, Math.round(height * factor)) };
}

export interface CardSpec {
  /** The requested size (the PNG is this size unless a side exceeds the render cap). */
  width: number;
  height: number;
  /** What the background pattern is derived from: equal keys give equal backgrounds. */
  key: string;
  /** The text, first line highlighted. Lines are cut to fit; `wrap` lines are word-wrapped onto up to three lines. */
  lines: Array<string | { wrap: string }>;
  maxSide?: number;
}

const BARS: Rgb[] = [
  [235, 235, 235], [235, 235, 16], [16, 235, 235], [16, 235, 16], [235, 16, 235], [235, 16, 16], [16, 16, 235], [16, 16, 16],
];

/** Draws a card as RGBA. */
export function drawCard(spec: CardSpec): Raster {
  const size = renderedSize(spec.width, spec.height, spec.maxSide);
  const r: Raster = { width: size.width, height: size.height, data: Buffer.alloc(size.width * size.height * 4) };
  const h = createHash("sha256").update(spec.key).digest();
  const byte = (i: number) => h[i % h.length]!;

  // Background: a banded two-hue gradient at a hashed angle, modulated by a hashed pattern.
  const hue1 = (byte(0) / 255) * 360;
  const hue2 = hue1 + 60 + (byte(1) / 255) * 180;
  const c1 = hsl(hue1, 0.45 + byte(2) / 1000, 0.38 + byte(3) / 2000);
  const c2 = hsl(hue2 % 360, 0.45 + byte(4) / 1000, 0.5 + byte(5) / 2000);
  const angle = (byte(6) / 256) * Math.PI * 2;
  const pattern = byte(7) % 3;
  const ratio = r.width / spec.width;
  const period = Math.max(4, (24 + (byte(8) % 40)) * ratio);
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);
  const cx = r.width / 2;
  const cy = r.height / 2;
  const half = Math.hypot(cx, cy) || 1;
  const BANDS = 12;
  for (let y = 0; y < r.height; y++) {
    for (let x = 0; x < r.width; x++) {
      const dx = x - cx;
      const dy = y - cy;
      const t = Math.min(BANDS - 1, Math.floor(((dx * cos + dy * sin) / half / 2 + 0.5) * BANDS)) / (BANDS - 1);
      let on: number;
      if (pattern === 0) on = (Math.floor(x / period) + Math.floor(y / period)) & 1;
      else if (pattern === 1) on = Math.floor((dx * sin - dy * cos) / period) & 1;
      else on = Math.floor(Math.hypot(dx, dy) / period) & 1;
      const shade = on ? 1 : 0.86;
      const i = (y * r.width + x) * 4;
      r.data[i] = Math.round((c1[0] + (c2[0] - c1[0]) * t) * shade);
      r.data[i + 1] = Math.round((c1[1] + (c2[1] - c1[1]) * t) * shade);
      r.data[i + 2] = Math.round((c1[2] + (c2[2] - c1[2]) * t) * shade);
      r.data[i + 3] = 255;
    }
  }

  // Test-card furniture: a frame, a centre cross and colour bars along the bottom.
  const line = Math.max(1, Math.round(Math.min(r.width, r.height) / 256));
  const white: Rgb = [245, 245, 245];
  fillRect(r, 0, 0, r.width, line, white);
  fillRect(r, 0, r.height - line, r.width, line, white);
  fillRect(r, 0, 0, line, r.height, white);
  fillRect(r, r.width - line, 0, line, r.height, white);
  const arm = Math.min(r.width, r.height) / 10;
  fillRect(r, cx - arm, cy - line / 2, arm * 2, line, white, 0.6);
  fillRect(r, cx - line / 2, cy - arm, line, arm * 2, white, 0.6);
  const barH = Math.max(2, Math.round(r.height / 24));
  BARS.forEach((color, b) => {
    const x0 = line + Math.round(((r.width - 2 * line) * b) / BARS.length);
    const x1 = line + Math.round(((r.width - 2 * line) * (b + 1)) / BARS.length);
    fillRect(r, x0, r.height - line - barH, x1 - x0, barH, color);
  });

  drawTextPanel(r, spec.lines, barH + line);
  return r;
}

/** The text, centred on a dark panel, at the largest scale at which the header line fits the width (at least 1). */
function drawTextPanel(r: Raster, lines: CardSpec["lines"], bottomReserved: number): void {
  const pad = (scale: number) => 2 * scale + 2;
  const header = typeof lines[0] === "string" ? lines[0] : "";
  let scale = Math.max(1, Math.min(8, Math.floor((r.width - 16) / (CELL_W * Math.max(20, [...header].length + 2)))));
  let laidOut: string[] = [];
  for (; scale >= 1; scale--) {
    const maxChars = Math.max(1, Math.floor((r.width - 2 * pad(scale) - 4) / (CELL_W * scale)));
    laidOut = lines.flatMap((l) => (typeof l === "string" ? [l.length > maxChars ? `${l.slice(0, Math.max(0, maxChars - 3))}...` : l] : wrapText(l.wrap, maxChars, 3)));
    if (laidOut.length * CELL_H * scale + 2 * pad(scale) <= r.height - bottomReserved || scale === 1) break;
  }
  scale = Math.max(1, scale);
  const p = pad(scale);
  const fit = Math.max(1, Math.floor((r.height - bottomReserved - 2 * p) / (CELL_H * scale)));
  laidOut = laidOut.slice(0, fit);
  const panelW = Math.min(r.width, Math.max(...laidOut.map((l) => textWidth(l, scale))) + 2 * p);
  const panelH = laidOut.length * CELL_H * scale - scale + 2 * p;
  const x0 = Math.floor((r.width - panelW) / 2);
  const y0 = Math.max(0, Math.floor((r.height - bottomReserved - panelH) / 2));
  fillRect(r, x0, y0, panelW, panelH, [0, 0, 0], 0.78);
  laidOut.forEach((l, i) => {
    const color: Rgb = i === 0 ? [255, 214, 0] : [255, 255, 255];
    drawText(r, x0 + Math.floor((panelW - textWidth(l, scale)) / 2), y0 + p + i * CELL_H * scale, l, scale, color);
  });
}

/** Box-filters a raster down so that neither side exceeds `maxSide`. */
export function downscale(src: Raster, maxSide: number): Raster {
  const size = renderedSize(src.width, src.height, maxSide);
  if (size.width === src.width && size.height === src.height) return src;
  const dst: Raster = { width: size.width, height: size.height, data: Buffer.alloc(size.width * size.height * 4) };
  for (let y = 0; y < size.height; y++) {
    const sy0 = Math.floor((y * src.height) / size.height);
    const sy1 = Math.max(sy0 + 1, Math.floor(((y + 1) * src.height) / size.height));
    for (let x = 0; x < size.width; x++) {
      const sx0 = Math.floor((x * src.width) / size.width);
      const sx1 = Math.max(sx0 + 1, Math.floor(((x + 1) * src.width) / size.width));
      const sum = [0, 0, 0, 0];
      for (let sy = sy0; sy < sy1; sy++) {
        for (let sx = sx0; sx < sx1; sx++) {
          const i = (sy * src.width + sx) * 4;
          for (let c = 0; c < 4; c++) sum[c]! += src.data[i + c]!;
        }
      }
      const n = (sy1 - sy0) * (sx1 - sx0);
      const o = (y * size.width + x) * 4;
      for (let c = 0; c < 4; c++) dst.data[o + c] = Math.round(sum[c]! / n);
    }
  }
  return dst;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A PNG text chunk: tEXt when the text is Latin-1, iTXt (UTF-8) otherwise, as Pillow writes them. */
function textChunk(keyword: string, text: string): Buffer {
  const latin1 = /^[\u0000-\u00ff]*$/.test(text);
  const type = Buffer.from(latin1 ? "tEXt" : "iTXt", "latin1");
  const data = latin1
    ? Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0]), Buffer.from(text, "latin1")])
    : Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, "utf8")]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([type, data])));
  return Buffer.concat([length, type, data, crc]);
}

/** Encodes RGBA as an RGB (or RGBA with `alpha`) PNG; `text` entries become text chunks after IHDR (the WebUI puts its infotext under "parameters"). */
export function encodePng(r: Raster, options: { text?: Record<string, string>; alpha?: boolean } = {}): Buffer {
  const png = new PNG({ width: r.width, height: r.height });
  r.data.copy(png.data);
  const encoded = PNG.sync.write(png, { colorType: options.alpha ? 6 : 2, inputHasAlpha: true, filterType: 1, deflateLevel: 6 });
  const entries = Object.entries(options.text ?? {});
  if (entries.length === 0) return encoded;
  const ihdrEnd = 8 + 4 + 4 + 13 + 4;
  return Buffer.concat([encoded.subarray(0, ihdrEnd), ...entries.map(([k, v]) => textChunk(k, v)), encoded.subarray(ihdrEnd)]);
}

/** What a generated image is described by; equal specs give equal PNG bytes. */
export interface GenerationCardSpec {
  width: number;
  height: number;
  prompt: string;
  steps: number;
  sampler: string;
  seed: number;
  /** Further lines, e.g. the task and the checkpoint asked for. */
  notes?: string[];
}

export function generationCard(spec: GenerationCardSpec, maxSide = MAX_RENDER_SIDE): CardSpec {
  const rendered = renderedSize(spec.width, spec.height, maxSide);
  const capped = rendered.width !== spec.width || rendered.height !== spec.height;
  return {
    width: spec.width,
    height: spec.height,
    maxSide,
    key: JSON.stringify(["generation", spec.seed, spec.prompt, spec.width, spec.height, spec.steps, spec.sampler]),
    lines: [
      "EMULATED — not a real generation",
      { wrap: spec.prompt.length > 0 ? `"${spec.prompt}"` : "(empty prompt)" },
      `${spec.width}x${spec.height}, ${spec.steps} steps, ${spec.sampler}`,
      `seed ${spec.seed}`,
      ...(spec.notes ?? []),
      ...(capped ? [`rendered at ${rendered.width}x${rendered.height}`] : []),
    ],
  };
}

/** A PNG test card for a generated image, optionally with the WebUI's "parameters" text chunk. */
export function generationCardPng(spec: GenerationCardSpec, parameters?: string): Buffer {
  return encodePng(drawCard(generationCard(spec)), parameters === undefined ? {} : { text: { parameters } });
}

/**
 * A progress preview: the card scaled to at most PREVIEW_SIDE, fading in from hashed noise as
 * `fraction` goes from 0 to 1 (like a sampler's latent preview).
 */
export function previewPng(card: Raster, fraction: number, noiseKey: string): Buffer {
  const small = downscale(card, PREVIEW_SIDE);
  const out: Raster = { width: small.width, height: small.height, data: Buffer.from(small.data) };
  const f = Math.max(0, Math.min(1, fraction));
  let state = createHash("sha256").update(noiseKey).digest().readUInt32BE(0) || 1;
  for (let i = 0; i < out.data.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      // xorshift32: cheap deterministic noise
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      const noise = (state >>> 0) & 0xff;
      out.data[i + c] = Math.round(out.data[i + c]! * f + noise * (1 - f));
    }
  }
  return encodePng(out);
}
