import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    // Test files and the externalised server libraries must share graphql's CJS build (one realm).
    alias: { graphql: "graphql/index.js" },
  },
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/global-setup.ts"],
    environment: "node",
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ["default"],
  },
});
