#!/usr/bin/env bash
# Makes the Dockerfile's base image, node:24-slim, locally, where no image registry is
# reachable (our CI machines): a Debian root filesystem from mmdebstrap, Node 24's binary
# from the npm `node` package already in node_modules, npm from the npm registry, and the
# `node` user with uid 1000 that the official image has. Then `podman build --pull=never`
# finds it under the name the Dockerfile uses.
#
#   bash scripts/node-base-image.sh            # builds it unless it exists
#   bash scripts/node-base-image.sh --force    # rebuilds it
#
# Needs root, podman and mmdebstrap (apt-get install -y podman mmdebstrap).
set -euo pipefail
cd "$(dirname "$0")/.."

image=node:24-slim
if [[ "${1:-}" != "--force" ]] && podman image exists "$image"; then
  echo "$image exists"
  exit 0
fi

node_bin=node_modules/node/bin/node
if [[ ! -x "$node_bin" ]] || [[ "$("$node_bin" --version)" != v24.* ]]; then
  echo "no Node 24 in $node_bin: run npm ci first" >&2
  exit 1
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT

# Debian's smallest root with CA certificates; no docs, man pages or locales, as the slim
# images leave them out.
mmdebstrap --quiet --variant=minbase --include=ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook='chroot "$1" groupadd --gid 1000 node' \
  --customize-hook='chroot "$1" useradd --uid 1000 --gid node --create-home --shell /bin/sh node' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$context/rootfs.tar" http://deb.debian.org/debian

cp "$node_bin" "$context/node"
# npm's own package is self-contained (its dependencies are bundled in the tarball).
npm pack --silent --pack-destination "$context" npm@11 >/dev/null
mkdir "$context/npm"
tar -xzf "$context"/npm-*.tgz -C "$context/npm" --strip-components=1

cat >"$context/Containerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
CMD ["node"]
EOF

podman build --quiet --network host --pull=never --format docker -t "$image" "$context"
echo "$image built: $(podman image inspect "$image" --format '{{.Size}}') bytes"
