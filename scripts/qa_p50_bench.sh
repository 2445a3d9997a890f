#!/usr/bin/env bash
# /qa latency with the shipped `qa` adapter against base, on one gateway, runs alternated:
#   bash scripts/qa_p50_bench.sh [REPEATS] [OUT]
# Starts its own gateway (fresh registry: the shipped adapters are published on start), runs
# `bioinstruct load --task pubmedqa --concurrency 8 --num-requests 48` with --adapter base and
# --adapter qa in turn, REPEATS times (default 3), and prints the median p50s and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin; PORT=${PORT:-8013}; URL=http://127.0.0.1:$PORT
REPEATS=${1:-3}; OUT=${2:-reports/bench/qa-p50-$(date +%Y%m%d-%H%M%S)}
REG=$(mktemp -d)/registry
mkdir -p "$OUT"
BIOINSTRUCT_REGISTRY="$REG" $BIN/bioinstruct serve --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null' EXIT
until curl -sf "$URL/health/ready" > /dev/null; do sleep 2; kill -0 $SERVE; done
for r in $(seq "$REPEATS"); do
  for a in base qa; do
    $BIN/bioinstruct load --task pubmedqa --adapter "$a" --concurrency 8 --num-requests 48 \
      --base-url "$URL" --out "$OUT/$a-$r" --no-progress > /dev/null
  done
done
$BIN/python - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
p50 = {a: [json.loads(p.read_text())["levels"][0]["e2e_ms"]["median"] for p in sorted(out.glob(f"{a}-*/bench.json"))]
       for a in ("base", "qa")}
ratios = [q / b for b, q in zip(p50["base"], p50["qa"])]
print(f"/qa p50 at concurrency 8: base {statistics.median(p50['base']):.0f} ms, qa {statistics.median(p50['qa']):.0f} ms; "
      f"qa/base per run {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")
PY
