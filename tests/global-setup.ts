import type { TestProject } from "vitest/node";
import { startBoth, startSqsEmulator, usePostgres } from "../scripts/embedded.ts";

declare module "vitest" {
  export interface ProvidedContext {
    sqsEndpoint: string;
    postgresUrl: string;
  }
}

/** Start the emulator and Postgres once; tests reach them over the network. */
export default async function setup(project: TestProject) {
  const [sqs, postgres] = await startBoth(startSqsEmulator(), usePostgres());
  project.provide("sqsEndpoint", sqs.endpoint);
  project.provide("postgresUrl", postgres.url);
  return async () => {
    await Promise.all([sqs.stop(), postgres.stop()]);
  };
}
