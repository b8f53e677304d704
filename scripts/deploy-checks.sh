#!/usr/bin/env bash
# The deploy checks `make test` runs beside the tests (niced, in the
# background): checkov on template.yaml, then the arm64 cross build of the
# functions with cargo-lambda and zig, as `sam build` makes it, in the fast
# check profile (`lambda-build.sh --check`; `make lambda-build` is the full one).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/venv.sh checkov
.venv/checkov/bin/checkov --config-file .checkov.yaml -f template.yaml
echo "checkov: passed ($(( $(date +%s) - start )) s with its install)"
bash scripts/lambda-build.sh --check --arm64
