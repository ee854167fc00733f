#!/usr/bin/env bash
# custody against restic (and rustic, where it builds), same tree, same machine, same target,
# in one run, rotating which tool goes first in each round. Prints min and median per metric
# and the ratio of custody's median to each peer's.
#
#   scripts/bench.sh                 # 1 GiB mixed tree, 3 rounds, local-folder repositories
#   SIZE_MIB=256 ROUNDS=5 scripts/bench.sh
#   TARGET=moto scripts/bench.sh     # both tools against moto's S3 server on loopback (TARGET=s3: the same)
#   TARGET=s3s-fs scripts/bench.sh   # both tools against s3s-fs (a file-backed S3 server) on loopback
#   TARGET=garage scripts/bench.sh   # both tools against a three-node Garage cluster on loopback
#   LOAD=2 scripts/bench.sh          # a busy host: 2 CPU-bound processes run throughout
#   FILES=20000 scripts/bench.sh     # 20,000 small files (200 B - 6 KiB) instead of the tree
#   FLOOR=1 scripts/bench.sh         # also custody's first backup against the stage floor
#
# Environment: SIZE_MIB (1024), ROUNDS (3), WORK (/tmp/custody-bench: tree and repositories),
# LOAD (0: CPU-bound busy loops started before the first round and stopped at the end),
# FILES (0: the mixed tree; N: a reproducible tree of N small files, 200 per folder),
# RESTORE_DIR (/dev/shm if present: restores land on tmpfs so that ext4's cost of creating
# thousands of files right after deleting thousands, which varies run to run here, does not
# drown the tools' own cost; set RESTORE_DIR=$WORK to restore to disk instead),
# FLOOR (0; 1: in every round, just before the first backups, `cargo bench --bench stages`
# runs every stage of a first backup alone over this tree; the table ends with custody's first
# backup against that floor. Measured each round because this machine's speed drifts by tens
# of percent within minutes: a floor measured once compared badly with later rounds).
# The tree comes from examples/mktree (text, random bytes, edited copies, small files), read
# from the page cache by both tools. restic runs with its defaults (compression auto); custody
# with its own (CUSTODY_COMPRESSION=auto|fast|max|off chooses another). PEERS ("restic rustic")
# names the other tools: rustic (crates.io rustic-rs) is built once into ~/.cargo/bin, and left
# out, with a note, where it does not build or on S3 targets.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE_MIB:-1024}
rounds=${ROUNDS:-3}
work=$(realpath -m "${WORK:-/tmp/custody-bench}")
restore_base=${RESTORE_DIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo "$work")}
target=${TARGET:-local}
load=${LOAD:-0}
files=${FILES:-0}

need() { command -v "$1" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need restic restic
peers=${PEERS:-restic rustic}
export PATH="$HOME/.cargo/bin:$PATH"
if [[ " $peers " == *" rustic "* ]]; then
  if [ "${TARGET:-local}" != local ]; then
    echo "note: rustic is measured on local folders only here" >&2; peers=${peers/rustic/}
  elif ! command -v rustic >/dev/null 2>&1 && ! cargo install --quiet --locked rustic-rs; then
    echo "note: rustic-rs does not build here; measuring restic only" >&2; peers=${peers/rustic/}
  fi
fi
tools="custody $peers"
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

cargo build --release --quiet --bin custody --example mktree
custody=$PWD/target/release/custody
mkdir -p "$work"
if [ "$files" -gt 0 ]; then
  tree=$work/files-$files
  [ -d "$tree" ] || python3 - "$tree" "$files" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 200))
    os.makedirs(d, exist_ok=True)
    size = rng.randint(200, 6000)
    with open(os.path.join(d, "f%07d" % i), "wb") as f:
        f.write(rng.randbytes(size // 2) + b"a" * (size - size // 2))
PY
else
  tree=$work/tree-$size
  if [ ! -d "$tree" ]; then target/release/examples/mktree "$tree" "$size" 1; fi
fi
input=$(du -sb "$tree" | cut -f1)
results=$work/results.tsv
# The zstd level of each mode; auto uses the repository's level, 3 for a repository `init` made.
case "${CUSTODY_COMPRESSION:-auto}" in fast) level=1 ;; max) level=19 ;; off) level=0 ;; *) level=3 ;; esac
[ "${FLOOR:-0}" != 1 ] || cargo bench --quiet --bench stages --no-run
# The stage floor of this tree's first backup, recorded as a metric of round $1. It counts CPU
# time on all cores: with LOAD busy loops the backup gets less of them, and the ratio grows.
floor_round() {
  STAGES_TREE=$tree STAGES_LEVEL=$level cargo bench --quiet --bench stages > "$work/floor.txt"
  [ "$1" != 1 ] || cat "$work/floor.txt"
  local floor
  floor=$(sed -n 's/^floor on .* cores: \([0-9.]*\) s$/\1/p' "$work/floor.txt")
  [ -n "$floor" ] || { echo "no floor in the output of cargo bench --bench stages:" >&2; cat "$work/floor.txt" >&2; exit 1; }
  printf 'custody\tstage_floor\t%s\t%s\t0\n' "$1" "$floor" >> "$results"
}
: > "$results"
steals=$work/steal.txt
: > "$steals"
export RESTIC_PASSWORD=bench-only-password RUSTIC_PASSWORD=bench-only-password RUSTIC_NO_PROGRESS=true
export CUSTODY_KEY_SERVICE="local:$work/custody-keyring"

# Everything started in the background (moto, busy loops) stops with the script.
background=()
trap 'for p in "${background[@]}"; do kill "$p" 2>/dev/null; done' EXIT

# Repository locations: local folders, or buckets on an S3 server on loopback (moto's, or
# s3s-fs, installed by scripts/test.sh or here).
c_repo="$work/c-repo"
r_repo="$work/r-repo"
[ "$target" = s3 ] && target=moto
case "$target" in
  local) ;;
  garage)
    command -v garage >/dev/null 2>&1 || cargo install --quiet --locked garage --version 2.5.0
    . scripts/garage-cluster.sh
    garage_cluster "$work/garage"
    background+=("${GARAGE_PIDS[@]}")
    export AWS_ACCESS_KEY_ID=$GARAGE_KEY_ID AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET
    export AWS_ENDPOINT_URL=$GARAGE_ENDPOINT AWS_REGION=us-east-1 ;;
  moto|s3s-fs)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    if [ "$target" = moto ]; then
      command -v moto_server >/dev/null 2>&1 || python3 -m pip install --quiet 'moto[server]'
      moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
    else
      export PATH="$HOME/.cargo/bin:$PATH"
      command -v s3s-fs >/dev/null 2>&1 || cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary
      rm -rf "$work/s3s-fs-root" && mkdir -p "$work/s3s-fs-root"
      s3s-fs --host 127.0.0.1 --port "$port" --access-key bench --secret-key bench "$work/s3s-fs-root" >/dev/null 2>&1 &
    fi
    background+=($!)
    for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
    export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 ;;
  *) echo "TARGET is local, moto (or s3), s3s-fs or garage" >&2; exit 2 ;;
esac
repos_for_round() { # fresh buckets per round on S3 (nothing to delete)
  if [ "$target" != local ]; then
    c_repo="s3://custody-bench-$1"
    r_repo="s3:$AWS_ENDPOINT_URL/restic-bench-$1"
    if [ "$target" = garage ]; then # buckets are made by the cluster's administrator
      for b in "custody-bench-$1" "restic-bench-$1"; do
        gcli bucket create "$b" >/dev/null
        gcli bucket allow --read --write --owner "$b" --key bench >/dev/null
      done
    fi
  fi
}
repo_bytes() { # TOOL
  if [ "$1" = rustic ]; then du -sb "$work/u-repo" | cut -f1
  elif [ "$target" != local ]; then
    if [ "$1" = custody ]; then $custody -q --json --repo "$c_repo" stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["pack_bytes"])'
    else restic -q -r "$r_repo" stats --mode raw-data --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["total_size"])'; fi
  else
    du -sb "$([ "$1" = custody ] && echo "$c_repo" || echo "$r_repo")" | cut -f1
  fi
}

# cpu_ticks: all CPU ticks and stolen ones so far (/proc/stat; 0 0 where there is none).
cpu_ticks() {
  awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print t, $9; f=1} END{if(!f) print 0, 0}' /proc/stat 2>/dev/null || echo 0 0
}

# measure TOOL METRIC ROUND CMD...: wall seconds and peak RSS into the results file, and the
# share of CPU time the hypervisor gave to other guests meanwhile (steal) into $steals.
measure() {
  local tool=$1 metric=$2 round=$3; shift 3
  # Each timed step starts with no dirty pages left by the previous one (the other tool's
  # writeback would otherwise land in this step's time).
  sync
  local before after
  before=$(cpu_ticks)
  /usr/bin/time -f "%e %M" -o "$work/time.out" "$@" >/dev/null 2>"$work/stderr.out" ||
    { echo "$tool $metric failed:" >&2; cat "$work/stderr.out" >&2; exit 1; }
  after=$(cpu_ticks)
  read -r secs rss < "$work/time.out"
  printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$metric" "$round" "$secs" "$rss" >> "$results"
  printf '%s %s %s\n' "$tool" "$before" "$after" >> "$steals"
}

run() { # run TOOL STEP ROUND
  local tool=$1 step=$2 r=$3
  case "$tool:$step" in
    custody:first)
      rm -rf "$work/c-repo" "$work/custody-keyring"
      $custody -q --repo "$c_repo" init
      measure custody first_backup "$r" $custody -q --repo "$c_repo" backup "$tree" ;;
    restic:first)
      rm -rf "$work/r-repo"
      restic -q -r "$r_repo" init >/dev/null
      measure restic first_backup "$r" restic -q -r "$r_repo" backup "$tree" ;;
    custody:unchanged) measure custody unchanged_backup "$r" $custody -q --repo "$c_repo" backup "$tree" ;;
    custody:writer) # a write-only client: no parent snapshot, only its local parent cache
      rm -rf "$work/writer-keyring" "$work/writer-cache"
      $custody -q --repo "$c_repo" key export --role writer --to "$work/writer-keyring"
      CUSTODY_CACHE_DIR=$work/writer-cache $custody -q --repo "$c_repo" --key-service "local:$work/writer-keyring" backup "$tree"
      CUSTODY_CACHE_DIR=$work/writer-cache measure custody unchanged_backup_writer "$r" $custody -q --repo "$c_repo" --key-service "local:$work/writer-keyring" backup "$tree" ;;
    restic:writer|rustic:writer) ;;
    rustic:first)
      rm -rf "$work/u-repo"
      rustic -r "$work/u-repo" init >/dev/null 2>&1
      measure rustic first_backup "$r" rustic -r "$work/u-repo" backup "$tree" ;;
    rustic:unchanged) measure rustic unchanged_backup "$r" rustic -r "$work/u-repo" backup "$tree" ;;
    rustic:changed) measure rustic changed_1pct_backup "$r" rustic -r "$work/u-repo" backup "$tree" ;;
    rustic:restore)
      rm -rf "$restore_base/u-out"
      measure rustic full_restore "$r" rustic -r "$work/u-repo" restore latest "$restore_base/u-out"
      rm -rf "$restore_base/u-out" ;;
    restic:unchanged) measure restic unchanged_backup "$r" restic -q -r "$r_repo" backup "$tree" ;;
    custody:changed) measure custody changed_1pct_backup "$r" $custody -q --repo "$c_repo" backup "$tree" ;;
    restic:changed) measure restic changed_1pct_backup "$r" restic -q -r "$r_repo" backup "$tree" ;;
    custody:restore)
      rm -rf "$restore_base/c-out"
      measure custody full_restore "$r" $custody -q --repo "$c_repo" restore latest --target "$restore_base/c-out"
      [ "$r" != 1 ] || diff -rq "$tree" "$restore_base/c-out$tree" >/dev/null || { echo "custody restore differs!"; exit 1; }
      rm -rf "$restore_base/c-out" ;;
    restic:restore)
      rm -rf "$restore_base/r-out"
      measure restic full_restore "$r" restic -q -r "$r_repo" restore latest --target "$restore_base/r-out"
      rm -rf "$restore_base/r-out" ;;
  esac
}

# change_files ROUND: edits 1% of the files (a different 1% each round) in place.
change_files() {
  python3 - "$tree" "$1" <<'PY'
import os, sys
tree, rnd = sys.argv[1], int(sys.argv[2])
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(tree) for f in fs)
for i, p in enumerate(files):
    if i % 100 == rnd % 100:
        with open(p, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(size // 2)
            f.write(b"changed by bench round %d" % rnd)
PY
}

for _ in $(seq 1 "$load"); do (while :; do :; done) & background+=($!); done
echo "input: $input bytes in $(find "$tree" -type f | wc -l) files; $rounds rounds; target $target; restores to $restore_base; $load busy loop(s)"
# Both tools read the tree from the page cache: the first timed step must not pay for reading
# it from disk (a freshly generated tree may not even be written back yet).
sync; tar -cf - -C "$tree" . | wc -c >/dev/null
for r in $(seq 1 "$rounds"); do
  repos_for_round "$r"
  read -ra ts <<<"$tools"; k=$(( (r - 1) % ${#ts[@]} ))
  order="${ts[*]:k} ${ts[*]:0:k}"; order=${order% }
  echo "round $r ($order)"
  [ "${FLOOR:-0}" != 1 ] || floor_round "$r"
  for step in first unchanged writer; do for t in $order; do run "$t" "$step" "$r"; done; done
  change_files "$r"
  for step in changed restore; do for t in $order; do run "$t" "$step" "$r"; done; done
  printf 'custody\trepo_bytes\t%s\t%s\t0\n' "$r" "$(repo_bytes custody)" >> "$results"
  for t in $peers; do printf '%s\trepo_bytes\t%s\t%s\t0\n' "$t" "$r" "$(repo_bytes "$t")" >> "$results"; done
done

python3 - "$results" "$input" "$steals" $tools <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
input_bytes = int(sys.argv[2])
steals = [l.split() for l in open(sys.argv[3])]
tools = sys.argv[4:]
peers = tools[1:]
data = {}
for tool, metric, rnd, val, rss in rows:
    data.setdefault((metric, tool), []).append((float(val), int(rss)))
med = lambda m, t: statistics.median(v for v, _ in data[(m, t)])
metrics = ["first_backup", "unchanged_backup", "changed_1pct_backup", "full_restore", "repo_bytes"]
print()
print(f"{'metric':<22}" + "".join(f"{t + ' min':>14}{'median':>10}" for t in tools)
      + "".join(f"{'vs ' + p:>11}" for p in peers))
for m in metrics:
    fmt = (lambda x: f"{x/2**20:.0f}M") if m == "repo_bytes" else (lambda x: f"{x:.2f}s")
    line = f"{m:<22}"
    for t in tools:
        vs = [v for v, _ in data[(m, t)]]
        line += f"{fmt(min(vs)):>14}{fmt(statistics.median(vs)):>10}"
    line += "".join(f"{med(m, 'custody') / med(m, p):>11.2f}" for p in peers)
    print(line)
w = [v for v, _ in data.get(("unchanged_backup_writer", "custody"), [])]
if w:
    print(f"{'unchanged, write-only':<22}{min(w):>13.2f}s{statistics.median(w):>9.2f}s"
          + f"  (ratios against the peers' unchanged backup:"
          + "".join(f" {p} {statistics.median(w) / med('unchanged_backup', p):.2f}" for p in peers) + ")")
for tool in tools:
    peak = max(rss for (m, t), vs in data.items() if t == tool for _, rss in vs)
    print(f"peak RSS {tool}: {peak/1024:.0f} MiB")
for m, what in [("first_backup", "first backup"), ("full_restore", "full restore")]:
    print(f"{what} throughput: " + ", ".join(f"{t} {input_bytes / med(m, t) / 2**20:.0f} MiB/s" for t in tools))
if ("stage_floor", "custody") in data:
    first, floor = med("first_backup", "custody"), med("stage_floor", "custody")
    rounds = lambda m: {r: float(v) for t, mm, r, v, _ in rows if t == "custody" and mm == m}
    firsts, floors = rounds("first_backup"), rounds("stage_floor")
    per_round = " ".join(f"{firsts[r] / floors[r]:.2f}" for r in sorted(floors, key=int) if r in firsts)
    print(f"custody first backup against the stage floor (medians): {first:.2f} s / {floor:.2f} s = {first / floor:.2f}; by round: {per_round}")
# On a virtual machine the hypervisor may run other guests on our cores (steal): times taken
# while much is stolen are slower and noisier, so each run says how much was.
def stolen(tool):
    tot = sum(int(a2) - int(a1) for t, a1, s1, a2, s2 in steals if t == tool)
    st = sum(int(s2) - int(s1) for t, a1, s1, a2, s2 in steals if t == tool)
    return 100 * st / tot if tot else 0
print("CPU time stolen by the hypervisor during the timed steps: "
      + ", ".join(f"{t} {stolen(t):.0f}%" for t in tools))
PY
