#!/usr/bin/env bash
# Creates .venv with the pinned Python tools the local stack and checks need.
# `venv.sh checkov` also creates .venv/checkov from requirements-checkov.txt:
# checkov pins an older boto3 than aws-sam-cli, so it cannot share .venv.
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
