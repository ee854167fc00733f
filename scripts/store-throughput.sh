#!/usr/bin/env bash
# Backup and restore throughput of custody on each store, same tree, same machine, one run:
# the local folder, s3s-fs, moto's S3 server, and a three-node Garage cluster (replication
# factor 3), all on loopback. Prints seconds and MB/s (input bytes / seconds) per store.
#
#   scripts/store-throughput.sh              # 256 MiB mixed tree
#   SIZE_MIB=1024 scripts/store-throughput.sh
#
# Needs the servers scripts/test.sh installs (moto_server, s3s-fs, garage); a missing one is
# skipped with a note. Environment: SIZE_MIB (256), WORK (/tmp/custody-throughput).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE_MIB:-256}
work=$(realpath -m "${WORK:-/tmp/custody-throughput}")
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --quiet --bin custody --example mktree
custody=$PWD/target/release/custody
rm -rf "$work" && mkdir -p "$work"
tree=$work/tree
target/release/examples/mktree "$tree" "$size" 1 >/dev/null
input=$(du -sb "$tree" | cut -f1)
export CUSTODY_KEY_SERVICE="local:$work/keyring" CUSTODY_CACHE_DIR=off
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.2; done; echo "port $1 never opened" >&2; return 1; }

run() { # NAME REPO-URL [ENV...]
  local name=$1 repo=$2; shift 2
  local out=$work/restore-$name
  env "$@" "$custody" -q --repo "$repo" init
  local t0 t1 t2
  t0=$(date +%s.%N)
  env "$@" "$custody" -q --repo "$repo" backup "$tree"
  t1=$(date +%s.%N)
  env "$@" "$custody" -q --repo "$repo" restore latest --target "$out"
  t2=$(date +%s.%N)
  diff -r "$tree" "$out$tree" >/dev/null || { echo "$name: restore differs" >&2; exit 1; }
  rm -rf "$out"
  python3 - "$name" "$input" "$t0" "$t1" "$t2" <<'PY'
import sys
name, n, t0, t1, t2 = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
b, r = t1 - t0, t2 - t1
print(f"{name:<10} backup {b:6.2f} s {n/b/1e6:7.1f} MB/s   restore {r:6.2f} s {n/r/1e6:7.1f} MB/s")
PY
}

echo "input: $((input / 1048576)) MiB, $(find "$tree" -type f | wc -l) files"
run local "$work/local-repo"

if command -v s3s-fs >/dev/null; then
  p=$(port); mkdir -p "$work/s3s"
  s3s-fs --host 127.0.0.1 --port "$p" --access-key bench --secret-key benchsecret "$work/s3s" >/dev/null 2>&1 &
  pids+=($!); wait_port "$p"
  run s3s-fs "s3://bench/repo" AWS_ENDPOINT_URL=http://127.0.0.1:$p AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
else echo "s3s-fs: not installed, skipped"; fi

if command -v moto_server >/dev/null; then
  p=$(port)
  moto_server -H 127.0.0.1 -p "$p" >/dev/null 2>&1 &
  pids+=($!); wait_port "$p"
  run moto "s3://bench/repo" AWS_ENDPOINT_URL=http://127.0.0.1:$p AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
else echo "moto: not installed, skipped"; fi

if command -v garage >/dev/null; then
  . scripts/garage-cluster.sh
  garage_cluster "$work/garage"
  pids+=("${GARAGE_PIDS[@]}")
  gcli bucket create bench >/dev/null
  gcli bucket allow --read --write --owner bench --key bench >/dev/null
  run garage-3 "s3://bench/repo" AWS_ENDPOINT_URL="$GARAGE_ENDPOINT" AWS_ACCESS_KEY_ID="$GARAGE_KEY_ID" AWS_SECRET_ACCESS_KEY="$GARAGE_SECRET" AWS_REGION=us-east-1
else echo "garage: not installed, skipped"; fi
