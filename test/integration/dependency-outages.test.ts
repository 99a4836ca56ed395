import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gql, rest, startTestStack, type TestStack } from "../helpers/test-stack.js";

/** S3 shedding load (503 SlowDown through a proxy, the real SDK retrying) as REST and GraphQL clients see it. */
describe("a dependency that sheds load", () => {
  let stack: TestStack;
  let base: string;
  let admin: string;

  beforeAll(async () => {
    stack = await startTestStack({ s3FaultProxy: true });
    base = stack.baseUrl;
    admin = stack.adminKey;
  });
  afterAll(async () => {
    await stack?.close();
  });

  async function datasetWithItsFileUploaded(name: string) {
    const created = await rest(base, "POST", "/datasets", { key: admin, body: { dataset_name: name, content: [{ filename: "a.png", name: "a.png", type: "image", params: {} }], creator: "admin" } });
    expect(created.status, created.text).toBe(201);
    const put = await fetch(created.body.data.s3PresignUrl["a.png"], { method: "PUT", body: new Uint8Array([137, 80, 78, 71]) });
    expect(put.status).toBe(200);
  }

  it("REST: 503 with Retry-After and a message naming the cause, nothing written; the same call succeeds once S3 is back", async () => {
    await datasetWithItsFileUploaded("outage_rest");
    const faults = stack.s3Faults!;
    faults.fault = "SlowDown";
    const refusedBefore = faults.refused;
    const res = await rest(base, "PUT", "/datasets/outage_rest", { key: admin, body: { status: "Enabled" } });
    faults.fault = null;
    expect(res.status, res.text).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    // Enabling looks at each file with HEAD, whose answer has no body to name the error: the status does.
    expect(res.body.message).toBe("AWS is throttling requests (HTTP 503); try again in a few seconds");
    // The SDK retried before giving up.
    expect(faults.refused - refusedBefore).toBeGreaterThanOrEqual(2);
    expect((await rest(base, "GET", "/datasets/outage_rest", { key: admin })).body.data.status).toBe("Initialed");

    const again = await rest(base, "PUT", "/datasets/outage_rest", { key: admin, body: { status: "Enabled" } });
    expect(again.status, again.text).toBe(200);
    expect(again.body.data.status).toBe("Enabled");
  });

  it("GraphQL: an UNAVAILABLE error on the field, not INTERNAL", async () => {
    await datasetWithItsFileUploaded("outage_gql");
    stack.s3Faults!.fault = "SlowDown";
    const res = await gql(base, `mutation { setDatasetStatus(name: "outage_gql", status: "Enabled") { name status } }`, {}, { key: admin });
    stack.s3Faults!.fault = null;
    expect(res.body.errors).toHaveLength(1);
    expect(res.body.errors![0]).toMatchObject({ message: "AWS is throttling requests (HTTP 503); try again in a few seconds", path: ["setDatasetStatus"], extensions: { code: "UNAVAILABLE" } });
    const ok = await gql(base, `mutation { setDatasetStatus(name: "outage_gql", status: "Enabled") { name status } }`, {}, { key: admin });
    expect(ok.body.data.setDatasetStatus).toEqual({ name: "outage_gql", status: "Enabled" });
  });

  it("a refusal that is not an outage (403 AccessDenied) stays an internal error: only outages are mapped", async () => {
    await datasetWithItsFileUploaded("outage_denied");
    stack.s3Faults!.fault = "AccessDenied";
    const res = await rest(base, "PUT", "/datasets/outage_denied", { key: admin, body: { status: "Enabled" } });
    stack.s3Faults!.fault = null;
    expect(res.status).toBe(500);
    expect(res.headers.get("retry-after")).toBeNull();
    expect(res.body.message).toMatch(/^internal error \(request id /);
  });
});
