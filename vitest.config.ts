import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two files at a time: most of the suite waits (outages, visibility timeouts, child
    // processes), so two overlap well on two cores (10m50s -> 6m57s here). Each file makes
    // its own queues, database and temp folders, and every test must pass on a busy machine.
    fileParallelism: true,
    maxWorkers: 2,
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
