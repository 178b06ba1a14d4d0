# syntax=docker/dockerfile:1
# sqs-login-masker: small, non-root, Node 24.
#
# Node 24 runs mod.ts directly: it strips TypeScript types itself, and every file uses only
# erasable syntax (tsconfig's erasableSyntaxOnly keeps it so). No tsx, no build step, and
# only the production dependencies in the image.
#
#   docker build -t sqs-login-masker .
#   docker run --rm -e QUEUE_URL=... -e DATABASE_URL=... -e MASK_HMAC_KEY=... -e AWS_REGION=... sqs-login-masker
FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies need no install scripts (those are for node, deno, embedded-postgres).
# Where the registry is reached only through an extra CA, pass that file as the optional
# secret npm_ca (docker build --secret id=npm_ca,src=$NODE_EXTRA_CA_CERTS); nothing of it
# stays in the image.
RUN --mount=type=secret,id=npm_ca,required=false \
    if [ -s /run/secrets/npm_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/npm_ca; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:24-slim
ENV NODE_ENV=production \
    METRICS_PORT=9464
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json mod.ts ./
COPY src ./src
COPY strategies ./strategies
COPY scripts ./scripts
# The image's own unprivileged user; nothing in /app is writable by it.
USER node
EXPOSE 9464
# Alive = the metrics server answers; /readyz (Postgres and SQS reachable) is for orchestrators' readiness probes.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+process.env.METRICS_PORT+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node itself is PID 1 and gets SIGTERM, so a stop commits what is in flight.
ENTRYPOINT ["node", "mod.ts"]
