import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["tests/**/*.test.ts"],
    // One SQS emulator and one Postgres for the whole run; each test file makes its own
    // queues and database on them.
    globalSetup: ["tests/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: files in parallel would fight the emulator and Postgres for them.
    fileParallelism: false,
  },
});
