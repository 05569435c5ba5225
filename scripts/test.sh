#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# On a fresh machine it first installs what the tests need, then runs:
# formatting, clippy (warnings are errors), unit + integration + property
# tests, `portcullis check` on the demo config, Schemathesis (PyPI) against
# the running demo, and the doc build.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- what the tests need -------------------------------------------------------
# redis-server: the Redis tests start real servers on free loopback ports.
if ! command -v redis-server >/dev/null 2>&1; then
  step "installing redis-server"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true

export CARGO_TERM_COLOR=never
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --all-targets -- -D warnings

step "tests (unit, property, integration)"
results=$(mktemp)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast 2>&1 | tee "$results"
  passed=$(sed -n 's/.* \([0-9][0-9]*\) tests run: \([0-9][0-9]*\) passed.*/\2/p' "$results" | tail -n1)
  failed=$(sed -n 's/.* \([0-9][0-9]*\) failed.*/\1/p' "$results" | tail -n1)
else
  cargo test --no-fail-fast 2>&1 | tee "$results"
  passed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) passed.*/\1/p' "$results" | awk '{s+=$1} END {print s+0}')
  failed=$(sed -n 's/^test result: .* \([0-9][0-9]*\) failed.*/\1/p' "$results" | awk '{s+=$1} END {print s+0}')
fi
rm -f "$results"

step "portcullis check on the demo config"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo run --quiet -- demo --dir "$tmp" --dry-run
cargo run --quiet -- check "$tmp/portcullis.toml"

step "schemathesis against the demo and its OpenAPI document"
# (installs schemathesis from PyPI into target/st-venv on the first run)
./scripts/schemathesis.sh

step "docs build (-D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

echo
echo "all checks passed"
echo "${passed:-0} passed, ${failed:-0} failed"
