# syntax=docker/dockerfile:1
#
# Portcullis image: compiled and its dependencies installed on the Debian Node 20 image, run on
# distroless Node 20 (same Debian 12 base): no shell, no package manager, non-root.
#
#   docker build -t portcullis:0.1.0 .
#   docker run --read-only -p 9001:9001 -p 9002:9002 \
#     -v "$PWD/examples/portcullis.yaml:/etc/portcullis/policy.yaml:ro" portcullis:0.1.0
#
# Pin both bases by digest (name:tag@sha256:…) in release builds.
ARG NODE_IMAGE=node:20-bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs20-debian12

# --- build: full install (TypeScript is a dev dependency), compile src/ to dist/ ---
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY scripts ./scripts
RUN npm run build

# --- production dependencies only, without install scripts: every runtime dependency is plain
# JavaScript (bcryptjs for imported bcrypt hashes, run in worker threads; no native addons), so
# nothing needs building and the same steps work for any --platform. grpc-js and proto-loader are
# dev dependencies (tests and the benchmark's null server only): the server speaks gRPC over
# node:http2 itself.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- runtime ---
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="External authorization (Envoy ext_authz v3) for Envoy and Istio" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/portcullis/portcullis"
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and read-only to the runtime user: nothing under /app is written at run time.
# package.json is needed at run time: its "type": "module" makes dist/*.js ES modules.
COPY package.json LICENSE ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# A numeric uid/gid (no passwd entry needed), so Kubernetes runAsNonRoot can verify it.
USER 10001:10001
# 9001: ext_authz v3 Check + grpc.health.v1 (gRPC). 9002: /healthz, /readyz, /metrics (HTTP).
EXPOSE 9001 9002
ENTRYPOINT ["/nodejs/bin/node", "dist/cli.js"]
CMD ["serve", "--config", "/etc/portcullis/policy.yaml"]
