#!/usr/bin/env bash
# Creates .venv with the pinned Python tools the local stack and checks need.
# `venv.sh checkov` also creates .venv/checkov from requirements-checkov.txt:
# checkov pins an older boto3 than aws-sam-cli, so it cannot share .venv.
# `venv.sh schemathesis` creates .venv/schemathesis, for the OpenAPI test.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! cmp -s scripts/requirements.txt .venv/.requirements; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt .venv/.requirements
fi
if [ "${1:-}" = checkov ] && { [ ! -x .venv/checkov/bin/checkov ] || ! cmp -s scripts/requirements-checkov.txt .venv/checkov/.requirements; }; then
  python3 -m venv .venv/checkov
  .venv/checkov/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-checkov.txt
  cp scripts/requirements-checkov.txt .venv/checkov/.requirements
fi
if [ "${1:-}" = schemathesis ] && { [ ! -x .venv/schemathesis/bin/schemathesis ] || ! cmp -s scripts/requirements-schemathesis.txt .venv/schemathesis/.requirements; }; then
  python3 -m venv .venv/schemathesis
  .venv/schemathesis/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-schemathesis.txt
  cp scripts/requirements-schemathesis.txt .venv/schemathesis/.requirements
fi
