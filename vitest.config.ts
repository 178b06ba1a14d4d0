import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: files in parallel would fight the emulator and Postgres for them.
    fileParallelism: false,
    projects: [
      // The consumer against an in-memory SQS and a fake handler: no service, seconds.
      { extends: true, test: { name: "unit", include: ["tests/unit/**/*.test.ts"], testTimeout: 20_000 } },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["tests/*.test.ts"],
          // One SQS emulator and one Postgres for the whole run; each test file makes its own
          // queues and database on them.
          globalSetup: ["tests/global-setup.ts"],
        },
      },
    ],
  },
});
