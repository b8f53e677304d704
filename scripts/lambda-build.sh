#!/usr/bin/env bash
# Builds every function the way `sam build` does (cargo-lambda, release,
# arm64 by default; `--x86-64` for the other architecture) and prints each
# bootstrap's size. cargo-lambda and zig come from PyPI into .venv/lambda;
# the Rust target is added with rustup. Its own target directory, so it can
# run beside the debug build and tests without waiting on cargo's lock.
#
# `--check` (what `make test` runs): the four functions of the issue's
# build check (render, fanout, deliver, links), cross-compiled and linked
# for arm64 by the same cargo-lambda and zig, but with opt-level 0 and no
# LTO, so that it fits beside the tests in CI; its sizes say nothing about
# the deployed build, which `make lambda-build` makes.
set -euo pipefail
cd "$(dirname "$0")/.."
check=
if [ "${1:-}" = --check ]; then
  check=1
  shift
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=0 CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
fi
arch="${1:---arm64}"
case "$arch" in
  --arm64) triple=aarch64-unknown-linux-gnu ;;
  --x86-64) triple=x86_64-unknown-linux-gnu ;;
  *) echo "usage: $0 [--arm64|--x86-64]" >&2; exit 2 ;;
esac
if [ ! -x .venv/lambda/bin/cargo-lambda ] || ! cmp -s scripts/requirements-lambda.txt .venv/lambda/.requirements; then
  python3 -m venv .venv/lambda
  .venv/lambda/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-lambda.txt
  cp scripts/requirements-lambda.txt .venv/lambda/.requirements
fi
rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
export PATH="$PWD/.venv/lambda/bin:$PATH"   # cargo-lambda finds zig through `python3 -m ziglang`
export CARGO_TARGET_DIR="$PWD/target/lambda-build"
packages=()
if [ -n "$check" ]; then
  packages=(-p render -p fanout -p deliver -p links)
  export CARGO_TARGET_DIR="$PWD/target/lambda-check"
else
  for f in functions/*/Cargo.toml; do packages+=(-p "$(basename "$(dirname "$f")")"); done
fi
start=$(date +%s)
cargo lambda build --release "$arch" "${packages[@]}" --lambda-dir "$CARGO_TARGET_DIR/lambda-${arch#--}"
echo "lambda-build: ${arch#--} ${check:+check (opt-level 0, no LTO) }release build in $(( $(date +%s) - start )) s"
# Each bootstrap must be an ELF for the asked architecture (e_machine 183
# is aarch64, 62 is x86-64); sizes in MiB.
python3 - "$CARGO_TARGET_DIR/lambda-${arch#--}" "${arch#--}" <<'PY'
import pathlib, sys
root, arch = pathlib.Path(sys.argv[1]), sys.argv[2]
want = {"arm64": 183, "x86-64": 62}[arch]
found = sorted(root.glob("*/bootstrap"))
if not found:
    sys.exit(f"lambda-build: no bootstrap under {root}")
for f in found:
    head = f.read_bytes()[:20]
    machine = int.from_bytes(head[18:20], "little")
    if head[:4] != b"\x7fELF" or machine != want:
        sys.exit(f"lambda-build: {f} is not a {arch} executable (e_machine {machine})")
    print(f"lambda-build: {f.parent.name:<10} {f.stat().st_size / 1048576:6.1f} MiB ({arch})")
PY
