#!/usr/bin/env bash
# Re-measures issue 14's table — binary size, idle RSS after one token, RSS
# per cached tenant at 20,000 tenants, cached hit ÷ /healthz req/s (median of
# 5 rounds) — for one or more binaries, in alternating rounds, with the load
# tool (bench/README.md, "Running it").
#
#   bench/footprint.sh OUTDIR [NAME=BINARY ...]
#
# Without NAME=BINARY it builds the working tree's sidecar as .ci/build-binary
# builds it (token-sidecar) and the standard-library reference bench/minimal
# the same way (minimal). Each figure's raw output goes to
# OUTDIR/footprint-*.txt, headed by the command and the load average.
# Needs wrk (apt-get install -y wrk) and taskset; takes about 3 minutes per
# binary. RUNS (default 3) is the number of hit-vs-static runs per binary.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,15p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=auto
out=$(mkdir -p "$1" && cd "$1" && pwd)
shift
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  VERSION=bench .ci/build-binary "$out/token-sidecar"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/minimal" ./bench/minimal
  bins=("token-sidecar=$out/token-sidecar" "minimal=$out/minimal")
fi
lt=$out/loadtest
go build -o "$lt" ./bench/loadtest

# header FILE COMMAND: starts FILE with the command, the time and the load.
header() { printf '# %s, %s, load %s\n' "$2" "$(date -u +%FT%TZ)" "$(cut -d' ' -f1-3 /proc/loadavg)" >"$out/$1"; }

header footprint-binary-size.txt "stat -c %s BINARY ($(go env GOVERSION) $(go env GOOS)/$(go env GOARCH))"
for nb in "${bins[@]}"; do echo "${nb%%=*} $(stat -c %s "${nb#*=}")" >>"$out/footprint-binary-size.txt"; done

header footprint-idle.txt "loadtest -binary BIN -scenario idle -settle 3s, 3 rounds, alternating"
for round in 1 2 3; do
  for nb in "${bins[@]}"; do
    echo "## round $round ${nb%%=*}" >>"$out/footprint-idle.txt"
    "$lt" -binary "${nb#*=}" -scenario idle -settle 3s >>"$out/footprint-idle.txt"
  done
done

header footprint-memory-per-tenant.txt "loadtest -binary BIN -scenario memory, 5 rounds, alternating"
for round in 1 2 3 4 5; do
  for nb in "${bins[@]}"; do
    echo "## round $round ${nb%%=*}" >>"$out/footprint-memory-per-tenant.txt"
    "$lt" -binary "${nb#*=}" -scenario memory >>"$out/footprint-memory-per-tenant.txt"
  done
done

header footprint-hit-vs-static.txt "taskset -c 0 loadtest -binary BIN -sidecar-cpus 1 -scenario hit-vs-static -rounds 5 -round 2s -open-duration 1s -open-segments 1, ${RUNS:-3} runs, alternating"
for run in $(seq "${RUNS:-3}"); do
  for nb in "${bins[@]}"; do
    echo "## run $run ${nb%%=*}" >>"$out/footprint-hit-vs-static.txt"
    taskset -c 0 "$lt" -binary "${nb#*=}" -sidecar-cpus 1 -scenario hit-vs-static \
      -rounds 5 -round 2s -open-duration 1s -open-segments 1 >>"$out/footprint-hit-vs-static.txt"
  done
done

grep -h -e '^## ' -e '^RSS ' -e '^per tenant' -e '^throughput ratio' "$out"/footprint-idle.txt \
  "$out"/footprint-memory-per-tenant.txt "$out"/footprint-hit-vs-static.txt
cat "$out/footprint-binary-size.txt"
