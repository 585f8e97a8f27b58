#!/usr/bin/env bash
# The prepared GPU check (`npm run bench:gpu`): conformance of every backend that runs (the
# micro-batch path included), the step bench for LSTM and GRU at H in {32, 128, 512} and B in
# {1, 64, 1024, 8192, 32768} on webgpu (one step per call, 8 waves per micro-batch call, and the
# same with the keys' state in the slot table)
# beside onnxruntime's CPU operator on this host's cores, and replay of the ball fixture on
# webgpu (keys' state on the device, and on the host) and on onnx, and what the service's
# changelog costs on webgpu with the state on the device and on the host
# (bench/changelog-traffic.ts). Writes one markdown file, bench-gpu.md, in --out (default: the
# current directory). Each part has its own time limit; together they stay under 8 minutes
# (70 + 55 + 80 + 130 + 3 x 25 + 40 s = 450 s), and a part cut short loses only its table.
#
#   npm run bench:gpu                              # a GPU host that can install what is missing
#   bash scripts/bench-gpu.sh --bundle .gpu-bundle --out "$OUT"
#                                                  # a host that can fetch nothing: what
#                                                  # scripts/gpu-bundle.sh packed here
#   BENCH_GPU_BACKENDS=gpu BENCH_GPU_QUICK=1 xvfb-run -a bash scripts/bench-gpu.sh
#                                                  # the script itself, checked without a GPU
#                                                  # (headless-gl on Mesa, a small grid)
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=""
out="."
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle) bundle="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: bench-gpu.sh [--bundle DIR] [--out DIR]" >&2; exit 2 ;;
  esac
done
device_backends="${BENCH_GPU_BACKENDS:-webgpu}"
mkdir -p "$out"
report="$out/bench-gpu.md"
log="$out/bench-gpu.log"
: >"$log"
node=node

# What the host needs: the built project and its packages, the webgpu package (Dawn), and the
# Vulkan loader through which Dawn reaches the GPU's driver.
if [ -n "$bundle" ]; then
  tar -C "$bundle" -xJf "$bundle/rnnstream.tar.xz"
  rm -rf dist node_modules && mv "$bundle/rnnstream/dist" "$bundle/rnnstream/node_modules" .
  node="$bundle/bin/node"
  if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
    for f in "$bundle"/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
    ldconfig
  fi
else
  [ -d node_modules ] || npm ci --no-audit --no-fund
  [ -e node_modules/webgpu/package.json ] || npm install --no-save --no-audit --no-fund webgpu@0.4.0
  if ! ldconfig -p | grep -q 'libvulkan.so.1' && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq --no-install-recommends libvulkan1 >/dev/null
  fi
  [ -d dist/src ] || npm run build --silent
fi
# A driver's ICD outside the loader's default folders (seen on lent NVIDIA machines).
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

gpu_name=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
{
  echo "# GPU bench: ${gpu_name:-no nvidia-smi}"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Node $("$node" --version), device backends: $device_backends."
  echo
  echo '## Conformance (`rnnstream backends --check`)'
  echo
  echo '```'
  timeout 70 "$node" dist/src/cli/main.js backends --check 2>>"$log" || echo "(backends --check ended with code $?)"
  echo '```'
  echo
  echo '## Key-steps per second (`dist/bench/steps.js`)'
  # One run per hidden size, each with its own time limit: a limit reached loses one table, not all.
  if [ -n "${BENCH_GPU_QUICK:-}" ]; then sizes="32:1,1024:3:0.03:80"; else sizes="32:1,64,1024,8192,32768:3:0.05:55 128:1,64,1024,8192,32768:3:0.05:80 512:1,64,1024,8192,32768:3:0.05:130"; fi
  for size in $sizes; do
    IFS=: read -r hidden batches rounds chunk limit <<<"$size"
    echo
    timeout "$limit" "$node" dist/bench/steps.js --backends "$device_backends,onnx" --cells lstm,gru --hidden "$hidden" --batches "$batches" --rounds "$rounds" --chunk "$chunk" --waves 8 --no-loop 2>>"$log" ||
      echo "(H=$hidden: the steps bench ended with code $? within ${limit} s)"
  done
  echo
  echo '## Replay of the ball fixture (`rnnstream replay --pipeline ball-direction --json`)'
  echo
  echo '| backend | path | events/s | per micro-batch: up | down | kernel calls | read-backs |'
  echo '|---|---|---|---|---|---|---|'
  for run in "$device_backends" "$device_backends --no-state-on-device" onnx; do
    # shellcheck disable=SC2086
    timeout 25 "$node" dist/src/cli/main.js replay --pipeline ball-direction --backend $run --json 2>>"$log" |
      "$node" -e '
        let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
          if (!s.trim()) { console.log(`| ${process.argv[1]} | failed (see bench-gpu.log) | | | | | |`); return; }
          const r = JSON.parse(s), t = r.transfers, kib = (n) => (n / 1024).toFixed(1) + " KiB";
          const path = t ? `${t.microBatchPath ? "one call per micro-batch" : "one call per wave"}, state ${t.stateOnDevice.on ? "on the device" : "on the host"}` : "host";
          const per = t ? t.perMicroBatch : undefined;
          console.log(`| ${r.backend.name} | ${path} | ${Math.round(r.eventsPerSecond)} | ${per ? kib(per.bytesUp) : "-"} | ${per ? kib(per.bytesDown) : "-"} | ${per ? per.kernelCalls : "-"} | ${per ? per.readBacks : "-"} |`);
        });' "$run"
  done
  echo
  echo '## The changelog'"'"'s traffic (`dist/bench/changelog-traffic.js`: ball fixture into the at-least-once sink, in-memory producer)'
  echo
  first_device="${device_backends%%,*}"
  # Mesa's llvmpipe (a check of this script without a GPU) needs about 40 s for the pair of runs.
  changelog_limit=$([ -n "${BENCH_GPU_QUICK:-}" ] && echo 90 || echo 40)
  timeout "$changelog_limit" "$node" dist/bench/changelog-traffic.js --backend "$first_device" --commit-interval 1000 --runs 1 2>>"$log" ||
    echo "(the changelog bench ended with code $? within $changelog_limit s)"
} >"$report"
cat "$report"
