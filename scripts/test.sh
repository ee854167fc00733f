#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and integration tests that drive the
# built binary against real services on loopback. It installs what those services need:
#   - moto's server (PyPI `moto[server]`) for the AWS KMS API;
# the tests start their own instances on free loopback ports and stop them when done.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# setpriv (util-linux) runs the unreadable-file test as an unprivileged user when we are root.
if ! command -v setpriv >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  step "installing util-linux (setpriv)"
  apt-get update -qq && apt-get install -y -qq util-linux >/dev/null
fi

if ! command -v moto_server >/dev/null 2>&1; then
  step "installing moto[server] (AWS KMS API on loopback; about 1.5 minutes)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]'
  hash -r
  command -v moto_server >/dev/null 2>&1 || export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
fi

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test"
cargo test --all-targets "$@"
