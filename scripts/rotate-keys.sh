#!/usr/bin/env bash
# A ready key-rotation job for cron or a systemd timer: re-wrap every wrapped key older than
# ROTATE_OLDER_THAN under the KEKs of ROTATE_TO, then verify a slice of the data with the new
# key service. Logs to stdout/stderr (the journal under systemd) and exits with codes a
# scheduler understands.
#
# Configuration (environment, or /etc/custody/rotate-keys.env with the systemd unit):
#   CUSTODY_REPOSITORY    repository                                            required
#   CUSTODY_KEY_SERVICE   the current key service (the one keys are wrapped by)  required
#   ROTATE_TO             the new key service URL                                required
#   ROTATE_OLDER_THAN     only keys wrapped longer ago than this (default: 0s = all)
#   VERIFY_SUBSET         check --read-data-subset N/M after rotating (default: pick by day, 1/7..7/7)
#   ROTATE_REPORT_DIR     where JSON reports go (default: /var/lib/custody/rotations)
#   CUSTODY               the custody binary (default: custody on PATH)
#
# Exit codes: 0 done and verified; 3 integrity failure found by the check; 4 key service
# denied or unreachable; 1 other failure; 2 bad setup. A rerun after any failure resumes.
set -uo pipefail
: "${CUSTODY_REPOSITORY:?set CUSTODY_REPOSITORY}" "${CUSTODY_KEY_SERVICE:?set CUSTODY_KEY_SERVICE}"
: "${ROTATE_TO:?set ROTATE_TO}"
custody=${CUSTODY:-custody}
reports=${ROTATE_REPORT_DIR:-/var/lib/custody/rotations}
older=${ROTATE_OLDER_THAN:-0s}
subset=${VERIFY_SUBSET:-$(( $(date -u +%u) ))/7}
export CUSTODY_REPOSITORY CUSTODY_KEY_SERVICE
mkdir -p "$reports" || exit 2
report="$reports/rewrap-$(date -u +%Y%m%dT%H%M%SZ).json"

echo "rotate-keys: rewrapping keys older than $older under $ROTATE_TO"
"$custody" --json -v rotate rewrap --to "$ROTATE_TO" --older-than "$older" > "$report"
code=$?
if [ $code -ne 0 ]; then
  echo "rotate-keys: rewrap failed (exit $code); rerun to resume" >&2
  exit $code
fi
cat "$report"

echo "rotate-keys: verifying with check --read-data-subset $subset under the new key service"
CUSTODY_KEY_SERVICE="$ROTATE_TO" "$custody" check --read-data-subset "$subset"
code=$?
case $code in
  0) echo "rotate-keys: done; the old KEKs protect nothing once every repository using them is rotated" ;;
  3) echo "rotate-keys: INTEGRITY FAILURE found while verifying (exit 3)" >&2 ;;
  4) echo "rotate-keys: the new key service refused or is unreachable (exit 4)" >&2 ;;
  *) echo "rotate-keys: verification failed (exit $code)" >&2 ;;
esac
exit $code
