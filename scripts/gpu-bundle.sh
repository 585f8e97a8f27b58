#!/usr/bin/env bash
# Packs what `scripts/bench-gpu.sh` needs on a GPU host that can fetch nothing (a lent device
# machine: no package registry, a 64 MiB limit on what travels) into .gpu-bundle/ (ignored by
# git): the built dist/, the production node_modules with only linux-x64 native binaries
# (Dawn's webgpu, onnxruntime's CPU library; not `gl`, which needs an X server there), this
# host's node binary, and Debian's Vulkan loader package. One xz archive, unpacked by
# bench-gpu.sh --bundle.
#
#   npm run build && bash scripts/gpu-bundle.sh      # then carry .gpu-bundle
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu-bundle
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
[ -d dist/src ] || { echo "build first: npm run build" >&2; exit 2; }
grep -qx '/.gpu-bundle/' .git/info/exclude 2>/dev/null || echo '/.gpu-bundle/' >>.git/info/exclude
rm -rf "$out" && mkdir -p "$out" "$stage/rnnstream/node_modules" "$stage/bin"

# Production dependencies (optional ones included: webgpu, onnxruntime-node), each package's
# directory as npm laid it out.
npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2 | sed "s#^$PWD/##" | grep '^node_modules/' | sort -u |
  while read -r dir; do
    case "$dir" in node_modules/gl | node_modules/gl/*) continue ;; esac
    mkdir -p "$stage/rnnstream/$(dirname "$dir")"
    cp -a "$dir" "$stage/rnnstream/$dir"
  done
# Native binaries for other platforms travel for nothing.
find "$stage/rnnstream/node_modules/webgpu/dist" -maxdepth 1 -type f ! -name 'linux-x64.dawn.node' ! -name '*.js' ! -name '*.json' -delete 2>/dev/null || true
ort="$stage/rnnstream/node_modules/onnxruntime-node/bin/napi-v6"
if [ -d "$ort" ]; then
  find "$ort" -mindepth 1 -maxdepth 1 ! -name linux -exec rm -rf {} +
  find "$ort/linux" -mindepth 1 -maxdepth 1 ! -name x64 -exec rm -rf {} +
  rm -f "$ort"/linux/x64/libonnxruntime_providers_{cuda,tensorrt}*.so
fi
# Type declarations, source maps, docs and unused module formats are not run.
find "$stage/rnnstream/node_modules" -type f \( -name '*.map' -o -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.md' -o -name '*.ts' \) -delete
rm -rf "$stage"/rnnstream/node_modules/rxjs/{src,dist/bundles,dist/esm5} "$stage"/rnnstream/node_modules/zod/src
cp -a dist "$stage/rnnstream/dist"
cp "$(command -v node)" "$stage/bin/node"

tar -C "$stage" -cJf "$out/rnnstream.tar.xz" rnnstream bin
# The Vulkan loader (Dawn reaches the NVIDIA driver's ICD through it), as a .deb to unpack there.
(cd "$out" && apt-get download libvulkan1 >/dev/null 2>&1) || echo "note: could not download libvulkan1 (no apt here); the GPU host must have the Vulkan loader" >&2
du -sh "$out"/* >&2
