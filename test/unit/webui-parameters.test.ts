import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { DomainError } from "../../src/domain/errors.js";
import { checkBase64Image, checkWebUiParameters, closestSampler, INFERENCE_TASK_TYPES, type InferenceTaskType, KNOWN_SAMPLERS, parseWebUiJson } from "../../src/domain/webui-parameters.js";

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), "../fixtures/webui-payloads");
const fixtureText = (name: string) => readFileSync(path.join(FIXTURES, name), "utf8");
const fixture = (name: string) => parseWebUiJson(fixtureText(name)) as Record<string, unknown>;

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 73, 72, 68, 82, 1, 2, 3]).toString("base64");
const JPEG = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 74, 70, 73, 70, 0]).toString("base64");
const WEBP = Buffer.concat([Buffer.from("RIFF"), Buffer.from([1, 2, 3, 4]), Buffer.from("WEBPVP8 ")]).toString("base64");
const GIF = Buffer.from("GIF89a\x01\x00\x01\x00\x00\x00\x00").toString("base64");

function errorOf(fn: () => unknown): DomainError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DomainError);
    return e as DomainError;
  }
  throw new Error("expected a DomainError, nothing was thrown");
}

function expectBad(task: InferenceTaskType, params: unknown, field: string, message?: RegExp, options?: { maxImages?: number; maxPixels?: number }) {
  const e = errorOf(() => checkWebUiParameters(task, params, options));
  expect(e.code).toBe("BAD_INPUT");
  expect(e.field).toBe(field);
  expect(e.message.startsWith(`${field}: `)).toBe(true);
  if (message) expect(e.message).toMatch(message);
}

const txt = (over: Record<string, unknown> = {}) => ({ prompt: "a cat", width: 512, height: 512, steps: 20, cfg_scale: 7, sampler_name: "Euler a", batch_size: 1, n_iter: 1, seed: -1, ...over });
const img = (over: Record<string, unknown> = {}) => ({ ...txt(), init_images: [PNG], denoising_strength: 0.75, ...over });

describe("parseWebUiJson", () => {
  it("parses plain JSON like JSON.parse", () => {
    const text = '{"a":[1,2.5,-3e2,true,false,null,"x\\"y\\\\"],"b":{"c":""}}';
    expect(parseWebUiJson(text)).toEqual(JSON.parse(text));
  });

  it("accepts bare Infinity, -Infinity and NaN outside strings, nested anywhere", () => {
    const v = parseWebUiJson('{"a": Infinity, "b": [-Infinity, NaN, {"c": {"d": [Infinity]}}], "e": 1}') as any;
    expect(v.a).toBe(Infinity);
    expect(v.b[0]).toBe(-Infinity);
    expect(Number.isNaN(v.b[1])).toBe(true);
    expect(v.b[2].c.d[0]).toBe(Infinity);
    expect(v.e).toBe(1);
    expect(parseWebUiJson("Infinity")).toBe(Infinity);
    expect(parseWebUiJson(" -Infinity ")).toBe(-Infinity);
  });

  it("leaves the strings Infinity, NaN and escaped quotes alone", () => {
    const v = parseWebUiJson('{"Infinity": "Infinity", "n": "NaN -Infinity", "q": "a\\"Infinity\\\\", "x": Infinity}') as any;
    expect(v).toEqual({ Infinity: "Infinity", n: "NaN -Infinity", q: 'a"Infinity\\', x: Infinity });
  });

  it("refuses trailing garbage and other invalid JSON with BAD_INPUT", () => {
    for (const bad of ['{"a": 1} x', '{"a": Infinity} x', '{"a": Infinityx}', '{"a": infinity}', '{"a": +Infinity}', '{"a": -NaN}', "{Infinity: 1}", '{"a": undefined}', '{"a": 1,}', "", '{"a": "unterminated', "[Infinity"]) {
      const e = errorOf(() => parseWebUiJson(bad));
      expect(e.code, bad).toBe("BAD_INPUT");
      expect(e.message).toMatch(/^not valid JSON/);
      expect(e.message).not.toContain("nonfinite");
    }
  });

  it("cannot be tricked into turning a string into a number", () => {
    const v = parseWebUiJson('{"s": "\\u0000nonfinite:Infinity", "t": Infinity}') as any;
    expect(v.s).toBe("\u0000nonfinite:Infinity");
    expect(v.t).toBe(Infinity);
  });
});

describe("checkWebUiParameters with the real WebUI fixtures", () => {
  const cases: [string, InferenceTaskType, number][] = [
    ["txt2img_api_param.json", "txt2img", 1],
    ["txt2img_api_param_batch_size.json", "txt2img", 4],
    ["txt2img_controlnet_mlsd.json", "txt2img", 1],
    ["img2img_api_param.json", "img2img", 1],
    ["extra-single-image-api-params.json", "extra-single-image", 1],
    ["rembg-api-params.json", "rembg", 1],
  ];
  it.each(cases)("%s passes as %s, returned unchanged", (name, task, images) => {
    const params = fixture(name);
    const before = structuredClone(params);
    const result = checkWebUiParameters(task, params);
    expect(result.params).toBe(params);
    expect(result.params).toStrictEqual(before);
    expect(result.params).toStrictEqual(fixture(name));
    expect(result.summary.images).toBe(images);
    if (task === "txt2img" || task === "img2img") {
      expect(result.params["s_tmax"]).toBe(Infinity);
      expect(result.params["alwayson_scripts"]).toStrictEqual(before["alwayson_scripts"]);
      expect(result.summary).toMatchObject({ width: 512, height: 512, steps: 20, batchSize: images, nIter: 1 });
      expect(KNOWN_SAMPLERS).toContain(result.summary.sampler);
    }
  });

  it("every fixture sampler_name/sampler_index is a known sampler", () => {
    for (const [name] of cases) {
      const p = fixture(name);
      for (const key of ["sampler_name", "sampler_index"]) if (typeof p[key] === "string") expect(KNOWN_SAMPLERS, `${name} ${key}`).toContain(p[key]);
    }
  });

  it("summarises a txt2img request", () => {
    expect(checkWebUiParameters("txt2img", txt({ batch_size: 2, n_iter: 3, seed: 42 })).summary).toEqual({ width: 512, height: 512, steps: 20, batchSize: 2, nIter: 3, images: 6, seed: 42, sampler: "Euler a" });
    expect(checkWebUiParameters("txt2img", {}).summary).toEqual({ images: 1 });
  });
});

describe("checkWebUiParameters rules", () => {
  it("requires an object and a known task", () => {
    for (const bad of [null, [], "x", 3]) expectBad("txt2img", bad, "parameters", /must be an object/);
    const e = errorOf(() => checkWebUiParameters("paint" as InferenceTaskType, {}));
    expect(e.field).toBe("task");
    expect(INFERENCE_TASK_TYPES).toEqual(["txt2img", "img2img", "extra-single-image", "extra-batch-images", "rembg"]);
  });

  it("allows empty prompts and null for WebUI-defined fields, passes unknown fields through", () => {
    const p = txt({ prompt: "", negative_prompt: "", width: null, height: null, steps: null, cfg_scale: null, sampler_name: null, seed: null, denoising_strength: null, my_extension: { weird: [NaN, Infinity] } });
    expect(checkWebUiParameters("txt2img", p).params).toBe(p);
  });

  it("checks prompts are strings", () => {
    expectBad("txt2img", txt({ prompt: 5 }), "parameters.prompt", /string/);
    expectBad("img2img", img({ negative_prompt: ["x"] }), "parameters.negative_prompt", /string/);
  });

  it.each([
    ["width", 513, /multiple of 8/],
    ["width", 56, /between 64 and 2048/],
    ["width", 2056, /between 64 and 2048/],
    ["width", 512.5, /integer/],
    ["width", "512", /integer/],
    ["width", NaN, /integer, got NaN/],
    ["height", Infinity, /integer/],
    ["height", 0, /between/],
    ["steps", 0, /between 1 and 150/],
    ["steps", 151, /between 1 and 150/],
    ["steps", 20.5, /integer/],
    ["cfg_scale", 0.5, /at least 1 and at most 30/],
    ["cfg_scale", 31, /at most 30/],
    ["cfg_scale", Infinity, /finite/],
    ["cfg_scale", NaN, /finite/],
    ["batch_size", 0, /between 1 and 8/],
    ["batch_size", 9, /between 1 and 8/],
    ["n_iter", 0, /between 1 and 100/],
    ["n_iter", 101, /between 1 and 100/],
    ["seed", -2, /-1/],
    ["seed", 1.5, /integer/],
    ["seed", "42", /integer/],
    ["denoising_strength", 1.5, /at most 1/],
    ["denoising_strength", -0.1, /at least 0/],
    ["sampler_name", "euler a", /did you mean "Euler a"/],
    ["sampler_index", "DPM++ 2M karras", /did you mean "DPM\+\+ 2M Karras"/],
    ["sampler_name", "Totally Made Up Sampler Name", /unknown sampler/],
    ["sampler_name", 3, /string/],
    ["alwayson_scripts", [], /must be an object/],
    ["alwayson_scripts", "controlnet", /must be an object/],
  ])("txt2img/img2img %s = %s fails", (key, value, message) => {
    expectBad("txt2img", txt({ [key]: value }), `parameters.${key}`, message);
    expectBad("img2img", img({ [key]: value }), `parameters.${key}`, message);
  });

  it("accepts the edges of the ranges", () => {
    for (const over of [{ width: 64, height: 2048 }, { steps: 1 }, { steps: 150 }, { cfg_scale: 1 }, { cfg_scale: 30 }, { cfg_scale: 7.5 }, { batch_size: 8, n_iter: 8 }, { seed: 0 }, { seed: 4294967295 }, { sampler_name: "", sampler_index: "LCM" }]) {
      expect(() => checkWebUiParameters("txt2img", txt(over)), JSON.stringify(over)).not.toThrow();
    }
    expect(() => checkWebUiParameters("img2img", img({ denoising_strength: 0 }))).not.toThrow();
    expect(() => checkWebUiParameters("img2img", img({ denoising_strength: 1 }))).not.toThrow();
  });

  it("does not look inside alwayson_scripts", () => {
    const p = txt({ alwayson_scripts: { controlnet: { args: [{ image: "not base64 !!", weight: Infinity }] } } });
    expect(checkWebUiParameters("txt2img", p).params).toBe(p);
  });

  it("limits the total images and pixels", () => {
    expectBad("txt2img", txt({ batch_size: 8, n_iter: 9 }), "parameters.n_iter", /72 images; at most 64/);
    expectBad("txt2img", txt({ batch_size: 4, n_iter: 2 }), "parameters.n_iter", /at most 6/, { maxImages: 6 });
    expectBad("txt2img", txt({ batch_size: 4, n_iter: undefined }), "parameters.batch_size", /at most 2/, { maxImages: 2 });
    expectBad("txt2img", txt({ width: 1024, height: 1024 }), "parameters.width", /pixels/, { maxPixels: 512 * 512 });
    expect(checkWebUiParameters("txt2img", txt({ batch_size: 4, n_iter: 16 })).summary.images).toBe(64);
  });

  it("img2img requires init_images as a non-empty array of base64 images", () => {
    const { init_images: _, ...withoutImages } = img();
    expectBad("img2img", withoutImages, "parameters.init_images", /required/);
    expectBad("img2img", img({ init_images: null }), "parameters.init_images", /required/);
    expectBad("img2img", img({ init_images: [] }), "parameters.init_images", /at least one/);
    expectBad("img2img", img({ init_images: PNG }), "parameters.init_images", /array/);
    expectBad("img2img", img({ init_images: [PNG, "%%%%"] }), "parameters.init_images.1", /not base64/);
    expectBad("img2img", img({ init_images: [PNG, 7] }), "parameters.init_images.1", /base64/);
    expectBad("img2img", img({ mask: GIF }), "parameters.mask", /PNG, JPEG or WebP/);
    expect(() => checkWebUiParameters("img2img", img({ init_images: [PNG, JPEG, WEBP, `data:image/png;base64,${PNG}`], mask: JPEG }))).not.toThrow();
  });

  it("extra-single-image requires image; upscaling_resize in (0, 8]", () => {
    expectBad("extra-single-image", {}, "parameters.image", /required/);
    expectBad("extra-single-image", { image: "abc" }, "parameters.image", /multiple of 4/);
    expectBad("extra-single-image", { image: JPEG, upscaling_resize: 0 }, "parameters.upscaling_resize", /greater than 0/);
    expectBad("extra-single-image", { image: JPEG, upscaling_resize: 9 }, "parameters.upscaling_resize", /at most 8/);
    expectBad("extra-single-image", { image: JPEG, upscaling_resize: Infinity }, "parameters.upscaling_resize", /finite/);
    expect(checkWebUiParameters("extra-single-image", { image: JPEG, upscaling_resize: 8, upscaler_1: "Lanczos" }).summary).toEqual({ images: 1 });
  });

  it("extra-batch-images requires imageList of { data, name }", () => {
    expectBad("extra-batch-images", {}, "parameters.imageList", /required/);
    expectBad("extra-batch-images", { imageList: {} }, "parameters.imageList", /array/);
    expectBad("extra-batch-images", { imageList: [] }, "parameters.imageList", /at least one/);
    expectBad("extra-batch-images", { imageList: [{ data: PNG, name: "a.png" }, "x"] }, "parameters.imageList.1", /object/);
    expectBad("extra-batch-images", { imageList: [{ data: GIF, name: "a.gif" }] }, "parameters.imageList.0.data", /signature/);
    expectBad("extra-batch-images", { imageList: [{ data: PNG }] }, "parameters.imageList.0.name", /string/);
    expectBad("extra-batch-images", { imageList: [{ data: PNG, name: "a" }, { data: PNG, name: "b" }] }, "parameters.imageList", /at most 1/, { maxImages: 1 });
    const p = { imageList: [{ data: PNG, name: "a.png" }, { data: `data:image/jpeg;base64,${JPEG}`, name: "b.jpg" }], upscaling_resize: 2 };
    expect(checkWebUiParameters("extra-batch-images", p)).toEqual({ params: p, summary: { images: 2 } });
  });

  it("rembg requires input_image", () => {
    expectBad("rembg", { model: "u2net" }, "parameters.input_image", /required/);
    expectBad("rembg", { input_image: WEBP, model: 3 }, "parameters.model", /string/);
    expect(checkWebUiParameters("rembg", { input_image: WEBP, model: "u2net" }).summary).toEqual({ images: 1 });
  });
});

describe("checkBase64Image", () => {
  const bad = (v: unknown, message: RegExp) => {
    const e = errorOf(() => checkBase64Image(v, "f"));
    expect(e.field).toBe("f");
    expect(e.message).toMatch(message);
  };

  it("accepts PNG, JPEG and WebP, with or without a data URL prefix", () => {
    for (const b of [PNG, JPEG, WEBP]) {
      expect(() => checkBase64Image(b, "f")).not.toThrow();
      expect(() => checkBase64Image(`data:image/whatever;base64,${b}`, "f")).not.toThrow();
    }
  });

  it("refuses a bad alphabet, bad padding, bad length, a non-image, URLs and malformed data URLs", () => {
    bad(`${PNG.slice(0, 8)}-_${PNG.slice(10)}`, /unexpected character "-"/);
    bad(`${PNG.slice(0, 8)}\n${PNG.slice(8)}`, /unexpected character/);
    bad(`${PNG.slice(0, 8)}==${PNG.slice(10)}`, /padding/);
    bad(PNG.replace(/=+$/, ""), /multiple of 4/);
    bad(GIF, /PNG, JPEG or WebP/);
    bad(Buffer.from("hello world, plain text").toString("base64"), /signature/);
    bad("", /empty/);
    bad("data:image/png;base64,", /empty/);
    bad(`data:text/plain;base64,${PNG}`, /data URL/);
    bad(`data:image/png,${PNG}`, /data URL/);
    bad("https://example.com/cat.png", /not a URL/);
    bad(null, /string/);
  });

  it("handles a large image quickly without decoding it", () => {
    const big = `data:image/png;base64,${PNG.slice(0, 24)}${"A".repeat(40_000_000)}`;
    const started = performance.now();
    expect(() => checkBase64Image(big, "f")).not.toThrow();
    expect(performance.now() - started).toBeLessThan(2000);
  });
});

describe("closestSampler", () => {
  it("suggests the nearest known name", () => {
    expect(closestSampler("euler_a")).toBe("Euler a");
    expect(closestSampler("DPM++2M Karras")).toBe("DPM++ 2M Karras");
    expect(closestSampler("unipc")).toBe("UniPC");
    expect(closestSampler("something else entirely")).toBeUndefined();
  });
});
