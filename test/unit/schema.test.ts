import { readFile } from "node:fs/promises";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { printedSchema } from "../../src/graphql/schema.js";
import { PROJECT_ROOT } from "../helpers/child-process.js";

describe("schema.graphql", () => {
  it("is what the resolvers generate (run `npm run schema` after changing them)", async () => {
    const committed = await readFile(path.join(PROJECT_ROOT, "schema.graphql"), "utf8");
    expect(committed).toBe(await printedSchema());
  });
});
