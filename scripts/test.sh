#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and integration tests that drive the
# built binary. It installs and starts every service the tests need (none yet beyond the
# embedded default: a local folder as the bucket and a local keyring as the key service).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# setpriv (util-linux) runs the unreadable-file test as an unprivileged user when we are root.
if ! command -v setpriv >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  step "installing util-linux (setpriv)"
  apt-get update -qq && apt-get install -y -qq util-linux >/dev/null
fi

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test"
cargo test --all-targets "$@"
