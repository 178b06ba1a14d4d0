/**
 * Deployment files: every Kubernetes manifest validates against the Kubernetes and KEDA
 * schemas and says what the tool needs (probes, stop grace, non-root, secrets, scaling on
 * the queue's depth); docker-compose.yml passes each strategy's secret.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { ScaledObject, TriggerAuthentication } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { Deployment } from "kubernetes-models/apps/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, Secret, ServiceAccount } from "kubernetes-models/v1";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { DEFAULT_STOP_GRACE_SECONDS, STOP_MARGIN_SECONDS } from "../src/consumer/options.ts";
import { ROOT } from "./helpers.ts";

const DIR = join(ROOT, "deploy", "kubernetes");

/** The schema-checked model for each kind the folder may hold. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  "apps/v1 Deployment": Deployment,
  "policy/v1 PodDisruptionBudget": PodDisruptionBudget,
  "v1 ConfigMap": ConfigMap,
  "v1 Secret": Secret,
  "v1 ServiceAccount": ServiceAccount,
  "keda.sh/v1alpha1 ScaledObject": ScaledObject,
  "keda.sh/v1alpha1 TriggerAuthentication": TriggerAuthentication,
};

/**
 * The trigger metadata KEDA's aws-sqs-queue scaler reads (pkg/scalers/aws_sqs_queue_scaler.go,
 * its `keda:"name=…"` tags; `…FromEnv` resolves a name from the target container's env).
 */
const AWS_SQS_QUEUE_METADATA = new Set([
  "queueURL",
  "queueURLFromEnv",
  "queueLength",
  "activationQueueLength",
  "awsRegion",
  "awsEndpoint",
  "scaleOnInFlight",
  "scaleOnDelayed",
  "identityOwner",
]);

interface Manifest {
  file: string;
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  // deno-lint-ignore no-explicit-any -- parsed YAML of any shape; the assertions check it
  [key: string]: any;
}

async function manifests(): Promise<Manifest[]> {
  const all: Manifest[] = [];
  for (const file of (await readdir(DIR)).filter((f) => f.endsWith(".yaml")).sort()) {
    for (const document of parseAllDocuments(await readFile(join(DIR, file), "utf8"))) {
      if (document.errors.length > 0) throw new Error(`${file}: ${document.errors[0]!.message}`);
      all.push({ file, ...document.toJS() });
    }
  }
  return all;
}

const one = (all: Manifest[], kind: string) => {
  const found = all.filter((m) => m.kind === kind);
  expect(found, kind).toHaveLength(1);
  return found[0]!;
};

describe("deploy/kubernetes", () => {
  it("every manifest validates against the Kubernetes or KEDA schema for its kind", async () => {
    const all = (await manifests()).filter((m) => m.kind !== "Kustomization");
    expect(all.map((m) => m.kind).sort()).toEqual(
      [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "ScaledObject",
        "Secret",
        "ServiceAccount",
        "TriggerAuthentication",
      ],
    );
    for (const { file, ...manifest } of all) {
      const Model = MODELS[`${manifest.apiVersion} ${manifest.kind}`];
      expect(Model, `${file}: ${manifest.apiVersion} ${manifest.kind}`).toBeDefined();
      expect(() => new Model!(manifest as never).validate(), file).not.toThrow();
    }
  });

  it("the schemas catch a broken manifest (the check can fail)", async () => {
    const deployment = one(await manifests(), "Deployment");
    const broken = structuredClone(deployment);
    broken.spec.template.spec.containers[0].ports[0].containerPort = "metrics";
    const { file: _, ...data } = broken;
    expect(() => new Deployment(data as never).validate()).toThrow(/containerPort/);
  });

  it("kustomization.yaml applies every manifest but the Secret example", async () => {
    const all = await manifests();
    const kustomization = one(all, "Kustomization");
    const files = [...new Set(all.filter((m) => m.kind !== "Kustomization" && m.kind !== "Secret").map((m) => m.file))]
      .sort();
    expect([...kustomization.resources].sort()).toEqual(files);
    expect(one(all, "Secret").file).toBe("secret.example.yaml");
  });

  it("the image is a placeholder that fails loudly until replaced, never a pull from Docker Hub", async () => {
    const all = await manifests();
    const [image] = one(all, "Kustomization").images;
    // kustomize replaces the image of every container whose image is `name`.
    expect(one(all, "Deployment").spec.template.spec.containers[0].image).toBe(image.name);
    const registry = image.newName.split("/")[0];
    // A host name (a dot), so not Docker Hub's library; under .invalid (RFC 2606), so it never resolves.
    expect(registry).toMatch(/\.invalid$/);
    expect(image.newTag).toBe(JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")).version);
  });

  it("says that with identityOwner: workload the workload role must trust KEDA's operator", async () => {
    const keda = await readFile(join(DIR, "keda.yaml"), "utf8");
    const auth = one(await manifests(), "TriggerAuthentication");
    expect(auth.spec.podIdentity.identityOwner).toBe("workload");
    expect(keda).toMatch(/trust policy must let it/);
    expect(keda).toContain("system:serviceaccount:keda:keda-operator");
    expect(keda).toMatch(/AssumeRole: a statement trusting the operator's own IAM role/);
  });

  it("the Deployment: probes on the tool's endpoints, a grace above its stop grace, non-root, read-only, resources, secrets from the Secret", async () => {
    const all = await manifests();
    const pod = one(all, "Deployment").spec.template.spec;
    const [container] = pod.containers;
    const config = one(all, "ConfigMap");
    const port = container.ports.find((p: { name: string }) => p.name === "metrics");
    expect(String(port.containerPort)).toBe(config.data.METRICS_PORT);
    expect(container.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "metrics" });
    expect(container.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "metrics" });
    // A stop exits within its grace plus STOP_MARGIN_SECONDS; Kubernetes kills it after this.
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(DEFAULT_STOP_GRACE_SECONDS + STOP_MARGIN_SECONDS);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    expect(container.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
    expect(container.resources.limits.memory).toEqual(expect.any(String));
    expect(container.envFrom).toEqual([
      { configMapRef: { name: config.metadata.name } },
      { secretRef: { name: one(all, "Secret").metadata.name } },
    ]);
    expect(one(all, "Deployment").spec.replicas).toBeUndefined(); // KEDA owns the count
    // No secret in the ConfigMap.
    expect(Object.keys(config.data).filter((k) => /KEY|PASSWORD|SECRET|DATABASE_URL/.test(k))).toEqual([]);
  });

  it("the PodDisruptionBudget selects the Deployment's pods and never blocks a drain", async () => {
    const all = await manifests();
    const pdb = one(all, "PodDisruptionBudget");
    expect(pdb.spec.selector.matchLabels).toEqual(one(all, "Deployment").spec.template.metadata.labels);
    expect(pdb.spec.maxUnavailable).toBeGreaterThanOrEqual(1);
    expect(pdb.spec.minAvailable).toBeUndefined();
  });

  it("the ScaledObject scales the Deployment on the queue's depth with aws-sqs-queue, down to zero", async () => {
    const all = await manifests();
    const scaled = one(all, "ScaledObject");
    const config = one(all, "ConfigMap");
    expect(scaled.spec.scaleTargetRef.name).toBe(one(all, "Deployment").metadata.name);
    expect(scaled.spec.minReplicaCount).toBe(0);
    expect(scaled.spec.maxReplicaCount).toBeGreaterThan(1);
    const [trigger] = scaled.spec.triggers;
    expect(trigger.type).toBe("aws-sqs-queue");
    expect(Object.keys(trigger.metadata).filter((k) => !AWS_SQS_QUEUE_METADATA.has(k))).toEqual([]);
    expect(config.data[trigger.metadata.queueURLFromEnv]).toBe(config.data.QUEUE_URL);
    expect(trigger.metadata.awsRegion).toBe(config.data.AWS_REGION);
    expect(Number(trigger.metadata.queueLength)).toBeGreaterThan(0);
    expect(trigger.metadata.activationQueueLength).toBe("0");
    expect(trigger.authenticationRef.name).toBe(one(all, "TriggerAuthentication").metadata.name);
    expect(one(all, "TriggerAuthentication").spec.podIdentity.provider).toBe("aws");
  });
});

/** `docker-compose config` with the given environment: the file as Compose resolves it. */
function composeConfig(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile("docker-compose", ["-f", "docker-compose.yml", "config"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, ...env },
    }, (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
  });
}

const hasCompose = ["/usr/bin/docker-compose", "/usr/local/bin/docker-compose"].some((p) => existsSync(p));

// .ci/run installs docker-compose (Debian's) before the tests; without it there is nothing to ask.
describe.skipIf(!hasCompose)("docker-compose.yml", () => {
  it.each([
    ["vault", { VAULT_TOKEN_KEY: "v".repeat(64), VAULT_RECOVERY_PUBLIC_KEY: "p".repeat(43) }],
    ["hmac", { MASK_HMAC_KEY: "h".repeat(64) }],
    ["ipcrypt-pfx", { MASK_IPCRYPT_KEY: "i".repeat(64), MASK_HMAC_KEY: "h".repeat(64) }],
  ])("MASK_STRATEGY=%s passes that strategy's secrets to the consumer", async (strategy, secrets) => {
    const run = await composeConfig({ MASK_STRATEGY: strategy, ...secrets });
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const consumer = parseAllDocuments(run.stdout)[0]!.toJS().services.consumer;
    expect(consumer.environment).toMatchObject({ MASK_STRATEGY: strategy, ...secrets });
  });
});
