#!/usr/bin/env bash
# How much one approved restore request releases (docs/FORMAT.md §19): a 2-of-3 quorum of
# local keyrings, HOSTS hosts backed up ROUNDS times each (round-robin, like nightly jobs),
# every host holding the same COMMON files plus files of its own of which CHANGE change each
# round. For the newest snapshot of each host it prints how many session keys a request
# releases, out of all, and how many stored bytes those keys open, out of all.
#
#   HOSTS=5 ROUNDS=10 scripts/measure-reach.sh
set -euo pipefail
HOSTS=${HOSTS:-5} ROUNDS=${ROUNDS:-10} COMMON=${COMMON:-30} OWN=${OWN:-30} CHANGE=${CHANGE:-3}
cd "$(dirname "$0")/.."
cargo build -q
bin=$PWD/target/debug/custody
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CUSTODY_CONFIG_DIR=$work/config
repo=$work/repo
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
holders = [{"name": n, "key_service": f"local:{w}/{n}"} for n in ("alice", "bob", "carol")]
json.dump({"format": 1, "threshold": 2, "holders": holders}, open(f"{w}/quorum.json", "w"))
PY
ks="quorum:$work/quorum.json"
c() { "$bin" --repo "$repo" --key-service "$ks" "$@"; }
c key create >/dev/null
c init >/dev/null
gen() { # gen DIR SEED COUNT PREFIX: COUNT files of 64 KiB from SEED
  python3 - "$@" <<'PY'
import os, random, sys
d, seed, n, prefix = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(d, exist_ok=True)
for i in range(n):
    r = random.Random(seed * 100003 + i)
    open(os.path.join(d, f"{prefix}{i:03}"), "wb").write(r.randbytes(65536))
PY
}
declare -A latest
for round in $(seq 1 "$ROUNDS"); do
  for h in $(seq 1 "$HOSTS"); do
    src=$work/host$h/data
    if [ "$round" = 1 ]; then
      gen "$src/common" 0 "$COMMON" c
      gen "$src/own" "$h" "$OWN" o
    else
      for i in $(seq 1 "$CHANGE"); do
        python3 -c "import random,sys; r=random.Random($h*7919+$round*31+$i); open('$src/own/o%03d' % r.randrange($OWN),'wb').write(r.randbytes(65536))"
      done
    fi
    latest[$h]=$(c --json backup --host "host$h" "$src" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')
  done
done
total_sessions=$(ls "$repo/keys" | wc -l)
# Bytes each session's packs hold, from the index.
for seg in "$repo"/index/*; do c cat index "$(basename "$seg")"; done | python3 -c '
import json, sys, collections
dec = json.JSONDecoder(); text = sys.stdin.read(); pos = 0; by = collections.Counter()
while pos < len(text):
    while pos < len(text) and text[pos].isspace(): pos += 1
    if pos >= len(text): break
    seg, pos = dec.raw_decode(text, pos)
    for p in seg["packs"]:
        by[p["session"]] += sum(b["length"] for b in p["blobs"])
json.dump(by, open(sys.argv[1], "w"))' "$work/bytes.json"
echo "repository: $HOSTS hosts x $ROUNDS rounds = $((HOSTS * ROUNDS)) snapshots, $total_sessions sessions"
for h in $(seq 1 "$HOSTS"); do
  id=$(c --json request create "${latest[$h]}" --reason measure |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["request"])')
  c request approve "$id" --holder alice >/dev/null 2>&1
  c --json request show "$id" | python3 -c '
import json, sys
show = json.load(sys.stdin)
by = json.load(open(sys.argv[1]))
released = show["answers"][0]["sessions"]
opened = sum(by.get(s, 0) for s in released)
total = sum(by.values())
print(f"host{sys.argv[2]} newest snapshot: an approval releases {len(released)} of {sys.argv[3]} session keys, "
      f"opening {opened / 2**20:.1f} of {total / 2**20:.1f} MiB stored ({100 * opened / total:.0f}%)")
' "$work/bytes.json" "$h" "$total_sessions"
done
