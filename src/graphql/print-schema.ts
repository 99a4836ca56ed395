import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { printedSchema } from "./schema.js";

// Regenerates the committed schema.graphql (npm run schema); a test fails while it is stale.
const target = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../schema.graphql");
await writeFile(target, await printedSchema());
process.stdout.write(`wrote ${target}\n`);
