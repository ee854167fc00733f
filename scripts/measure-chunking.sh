#!/usr/bin/env bash
# Measures how the average chunk size trades dedup of edited copies against index size:
# backs up the same mixed tree (examples/mktree: text, random, edited copies, small files)
# into fresh repositories with different --chunk-avg-kib and prints stored bytes and chunks.
# Usage: scripts/measure-chunking.sh [SIZE_MIB=1024] [WORKDIR=/tmp/custody-chunking]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
work=${2:-/tmp/custody-chunking}
cargo build --release --quiet --bin custody --example mktree
custody=$PWD/target/release/custody
mkdir -p "$work"
[ -d "$work/tree-$size" ] || target/release/examples/mktree "$work/tree-$size" "$size" 1
input=$(du -sb "$work/tree-$size" | cut -f1)
printf '%-9s %12s %9s %12s %8s\n' avg_kib stored_bytes stored_% data_chunks secs
for avg in 128 256 512 1024; do
  rm -rf "$work/repo" "$work/ring"
  export CUSTODY_REPOSITORY="$work/repo" CUSTODY_KEY_SERVICE="local:$work/ring"
  $custody init -q --chunk-avg-kib "$avg"
  out=$($custody --json backup "$work/tree-$size")
  added=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_added"])')
  secs=$(echo "$out" | python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["duration_secs"])')
  chunks=$($custody --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["data_blobs"])')
  printf '%-9s %12s %8.1f%% %12s %8s\n' "$avg" "$added" "$(python3 -c "print(100*$added/$input)")" "$chunks" "$secs"
done
echo "input: $input bytes in $(find "$work/tree-$size" -type f | wc -l) files"
