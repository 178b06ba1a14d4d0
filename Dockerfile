# syntax=docker/dockerfile:1
# sqs-login-masker: small, non-root, Node 24.
#
# The image holds one file: the tool with every dependency inside (`npm run bundle`), built
# in the first stage. It starts in about half the time of `node mod.ts` (no module graph to
# resolve, no types to strip: docs/benchmark.md), which a KEDA scale-up from zero waits for.
#
#   docker build -t sqs-login-masker .
#   docker run --rm -e QUEUE_URL=... -e DATABASE_URL=... -e MASK_HMAC_KEY=... -e AWS_REGION=... sqs-login-masker
FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The production dependencies, and the bundler alone of the development ones (the rest, an
# embedded Postgres and an emulator among them, are the tests'). None needs an install
# script. Where the registry is reached only through an extra CA, pass that file as the
# optional secret npm_ca (docker build --secret id=npm_ca,src=$NODE_EXTRA_CA_CERTS); nothing
# of it stays in the image.
RUN --mount=type=secret,id=npm_ca,required=false \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && esbuild=$(node -p "require('./package-lock.json').packages['node_modules/esbuild'].version") \
 && npm install --prefix /tmp/bundler --no-save --no-package-lock --ignore-scripts --no-audit --no-fund "esbuild@$esbuild" \
 && cp -r /tmp/bundler/node_modules/esbuild /tmp/bundler/node_modules/@esbuild node_modules/
COPY mod.ts ./
COPY src ./src
COPY strategies ./strategies
COPY scripts ./scripts
RUN node scripts/bundle.ts

FROM node:24-slim
ENV NODE_ENV=production \
    METRICS_PORT=9464
WORKDIR /app
COPY --from=build /app/dist/sqs-login-masker.mjs ./
# The image's own unprivileged user; nothing in /app is writable by it.
USER node
EXPOSE 9464
# Alive = the metrics server answers; /readyz (Postgres and SQS reachable) is for orchestrators' readiness probes.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+process.env.METRICS_PORT+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node itself is PID 1 and gets SIGTERM, so a stop commits what is in flight.
ENTRYPOINT ["node", "sqs-login-masker.mjs"]
