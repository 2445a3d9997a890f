#!/usr/bin/env bash
# The shipped adapters through the live API: gate on dev, then the adapter x task cells on test.
# Starts its own gateway (fresh registry, shipped adapters published on start), runs every
# evaluation into reports/shipped/, stops the gateway. Resumable: an existing run folder resumes.
#   bash scripts/eval_shipped.sh [TASK_ADAPTER_CELLS...]    (default: the list below)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=reports/shipped
PORT=${PORT:-8011}
URL=http://127.0.0.1:$PORT
REG=$(mktemp -d)/registry
mkdir -p "$OUT"
export BIOINSTRUCT_ADMIN_TOKEN=eval-admin BIOINSTRUCT_REGISTRY="$REG"
$BIN/bioinstruct serve --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null' EXIT
until curl -sf "$URL/health/ready" > /dev/null; do sleep 2; kill -0 $SERVE; done
echo "gateway ready: $(curl -s $URL/health/ready)"

gate() {  # alias candidate task dev-items [min-delta]
  [ -f "$OUT/gate-$1/gate.json" ] && return 0
  $BIN/bioinstruct eval gate --alias "$1" --candidate "$2" --task "$3" --limit "$4" --min-delta "${5:-0.01}" \
    --base-url "$URL" --admin-token eval-admin --concurrency 8 --no-progress --out "$OUT/gate-$1" || true
}
cell() {  # task adapter limit [split]
  local name="$1-$2${4:+-$4}"
  local args=(--task "$1" --adapter "$2" --base-url "$URL" --concurrency 8 --out "$OUT/$name" --no-progress)
  [ "$3" != all ] && args+=(--limit "$3")
  [ -n "${4:-}" ] && args+=(--split "$4")
  $BIN/bioinstruct eval "${args[@]}"
}
# Cells: TASK:ADAPTER:LIMIT[:SPLIT] (an evaluation, test split unless named; LIMIT 'all' = the
# whole split), gate:ALIAS:CANDIDATE:TASK:LIMIT[:MIN_DELTA] (the quality gate on the task's dev
# split, default min-delta 0.01), types:NAME:ADAPTER:LIMIT (`bioinstruct eval entity-types` on dev,
# with the gateway's BIOINSTRUCT_EXTRACT_TYPE_STRATEGY as exported), or
# publish:FOLDER:NAME:CATEGORY:ALIAS (an experiment's adapter into this run's registry, which
# the gateway picks up: `bioinstruct adapters publish`, the same checks as the admin API).
CELLS=("$@")
if [ ${#CELLS[@]} -eq 0 ]; then
  CELLS=(gate:ie-gated:bioinstruct-ie@1:bc5cdr:200 gate:gen-gated:bioinstruct-gen@1:mediqa_qs:50
         bc5cdr:base:300 bc5cdr:ie:300 meqsum_heldout:base:all meqsum_heldout:gen:all
         mediqa_qs:base:all mediqa_qs:gen:all bc5cdr:gen:300 meqsum_heldout:ie:all mediqa_qs:ie:all)
fi
for c in "${CELLS[@]}"; do
  if [[ $c == publish:* ]]; then
    IFS=: read -r _ folder name category alias <<< "$c"
    $BIN/bioinstruct adapters publish "$folder" --name "$name" --category "$category" --alias "$alias" --registry "$REG"
    sleep 5  # the gateway's registry poll
  elif [[ $c == gate:* ]]; then
    IFS=: read -r _ alias candidate task limit delta <<< "$c"
    gate "$alias" "$candidate" "$task" "$limit" "$delta"
  elif [[ $c == types:* ]]; then
    IFS=: read -r _ name adapter limit <<< "$c"
    [ -f "$OUT/types-$name/entity_types.json" ] || $BIN/bioinstruct eval entity-types --adapter "$adapter" \
      --limit "$limit" --base-url "$URL" --concurrency 8 --out "$OUT/types-$name" \
      --title "Entity types requested: adapter $adapter, strategy ${BIOINSTRUCT_EXTRACT_TYPE_STRATEGY:-grouped}"
  else
    IFS=: read -r task adapter limit split <<< "$c"
    cell "$task" "$adapter" "$limit" "$split"
  fi
done
