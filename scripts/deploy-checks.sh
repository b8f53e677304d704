#!/usr/bin/env bash
# The deploy checks `make test` runs beside the tests (niced, in the
# background): checkov on template.yaml, then every function built as
# `sam build` builds it (cargo-lambda, release, arm64).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/venv.sh checkov
.venv/checkov/bin/checkov --config-file .checkov.yaml -f template.yaml
echo "checkov: passed ($(( $(date +%s) - start )) s with its install)"
bash scripts/lambda-build.sh --arm64
