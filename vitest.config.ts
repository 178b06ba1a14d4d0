import { defineConfig } from "vitest/config";

/** Files whose stop tests time a release against SQS's long polls: run alone, see below. */
const ALONE = ["tests/faults.test.ts"];

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
          exclude: ALONE,
          // One SQS emulator and one Postgres for the whole run; each test file makes its own
          // queues and database on them.
          globalSetup: ["tests/global-setup.ts"],
        },
      },
      {
        // Run after the others, by itself: its clean-stop tests wait for released messages
        // to show again, and with another file's traffic on the shared emulator they twice
        // stayed hidden longer than the test waits (in ~8 runs of two files at a time).
        extends: true,
        test: {
          name: "integration-alone",
          include: ALONE,
          globalSetup: ["tests/global-setup.ts"],
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
