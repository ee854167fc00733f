#!/usr/bin/env bash
# Quick start on the embedded default: build custody, create a repository in a local folder
# with a local keyring, back up a folder, restore it, and show that nothing differs.
# Usage: scripts/demo.sh [FOLDER-TO-BACK-UP]   (default: this project's src/)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:-src}")
work=$(realpath -m .demo)
rm -rf "$work"
mkdir -p "$work"

echo "==> building custody"
cargo build --release --quiet
custody=target/release/custody

export CUSTODY_REPOSITORY="$work/repo"
export CUSTODY_KEY_SERVICE="local:$work/keyring"

echo "==> custody init  (repository: $CUSTODY_REPOSITORY, key service: $CUSTODY_KEY_SERVICE)"
$custody init
echo "==> custody backup $src"
$custody backup "$src"
echo "==> custody backup $src  (again: unchanged files are not re-read, nothing new is stored)"
$custody backup "$src"
echo "==> custody snapshots"
$custody snapshots
echo "==> custody restore latest --target $work/restore"
$custody restore latest --target "$work/restore"
echo "==> custody check --read-data"
$custody check --read-data
# Restore puts each source under the target at its full path.
echo "==> diff -r $src $work/restore$src"
diff -r "$src" "$work/restore$src"
echo "OK: the restored copy is identical. Everything lives in $work (delete it when done)."
