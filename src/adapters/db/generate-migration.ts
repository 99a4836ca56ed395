import "reflect-metadata";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { createDataSource } from "./data-source.js";

/*
 * Writes a migration with what TypeORM's schema builder would change after the existing
 * migrations: `DATABASE_URL=postgres://… npm run migration:generate -- EndpointDeployments`.
 * It works in a scratch database of that server, dropped afterwards. Register the new class in
 * data-source.ts.
 */
const name = process.argv[2];
const serverUrl = process.env.DATABASE_URL;
if (!name || !/^[A-Z][A-Za-z0-9]+$/.test(name) || !serverUrl) {
  process.stderr.write("usage: DATABASE_URL=postgres://... npm run migration:generate -- PascalCaseName\n");
  process.exit(2);
}
const scratch = `diffgate_gen_${randomBytes(4).toString("hex")}`;
const admin = new pg.Client({ connectionString: serverUrl });
await admin.connect();
await admin.query(`CREATE DATABASE ${scratch}`);
const url = new URL(serverUrl);
url.pathname = `/${scratch}`;
const ds = createDataSource(url.toString());
try {
  await ds.initialize();
  await ds.runMigrations();
  const log = await ds.driver.createSchemaBuilder().log();
  if (log.upQueries.length === 0) {
    process.stdout.write("the entities match the migrations; nothing to write\n");
  } else {
    const timestamp = Date.now();
    const lines = (queries: Array<{ query: string }>) => queries.map((q) => `    await q.query(\`${q.query.replace(/`/g, "\\`").trim()}\`);`).join("\n");
    const source = `import type { MigrationInterface, QueryRunner } from "typeorm";

export class ${name}${timestamp} implements MigrationInterface {
  name = "${name}${timestamp}";

  async up(q: QueryRunner): Promise<void> {
${lines(log.upQueries)}
  }

  async down(q: QueryRunner): Promise<void> {
${lines([...log.downQueries].reverse())}
  }
}
`;
    const file = path.join(path.dirname(fileURLToPath(import.meta.url)), "migrations", `${timestamp}-${name.replace(/([a-z0-9])([A-Z])/g, "$1-$2").toLowerCase()}.ts`);
    await writeFile(file, source);
    process.stdout.write(`wrote ${file}\n`);
  }
} finally {
  if (ds.isInitialized) await ds.destroy();
  await admin.query(`DROP DATABASE IF EXISTS ${scratch} WITH (FORCE)`);
  await admin.end();
}
