#!/usr/bin/env bash
# A ready backup job for cron or a systemd timer. Runs with a writer keyring or writer KMS
# credentials (it can add snapshots, never read them), writes the JSON summary of each run,
# and exits with codes a scheduler understands.
#
# Configuration (environment, or /etc/custody/backup-job.env with the systemd unit):
#   CUSTODY_REPOSITORY     repository (folder or file:/path)            required
#   CUSTODY_KEY_SERVICE    a writer key service: local:/etc/custody/writer-keyring,
#                          awskms:<data>?meta=<meta> with writer IAM credentials, or a
#                          pkcs11: URL of the writer token (pin-source=FILE)      required
#   BACKUP_PATHS           space-separated paths to back up              required
#   BACKUP_TAGS            space-separated tags (default: scheduled)
#   BACKUP_SUMMARY_DIR     where JSON summaries go (default: /var/lib/custody/summaries)
#   CUSTODY                the custody binary (default: custody on PATH)
#
# Key-service audit lines (`custody::audit`, one per wrap/unwrap) go to stderr: the journal.
# Exit codes: 0 success; 5 snapshot saved but some files were unreadable (see the summary);
# 3 integrity failure; 4 key service denied or unreachable; 1 other failure; 2 bad setup.
set -uo pipefail

: "${CUSTODY_REPOSITORY:?set CUSTODY_REPOSITORY}" "${CUSTODY_KEY_SERVICE:?set CUSTODY_KEY_SERVICE}"
: "${BACKUP_PATHS:?set BACKUP_PATHS}"
custody=${CUSTODY:-custody}
summaries=${BACKUP_SUMMARY_DIR:-/var/lib/custody/summaries}
tags=${BACKUP_TAGS:-scheduled}
export CUSTODY_REPOSITORY CUSTODY_KEY_SERVICE

mkdir -p "$summaries" || exit 2
stamp=$(date -u +%Y%m%dT%H%M%SZ)
summary="$summaries/backup-$stamp.json"
tag_args=()
for t in $tags; do tag_args+=(--tag "$t"); done

# shellcheck disable=SC2086 # BACKUP_PATHS is a list of paths
"$custody" --json -v backup "${tag_args[@]}" $BACKUP_PATHS > "$summary.tmp"
code=$?
if [ -s "$summary.tmp" ]; then mv "$summary.tmp" "$summary"; else rm -f "$summary.tmp"; fi

case $code in
  0) echo "custody backup: ok, summary $summary" ;;
  5) echo "custody backup: snapshot saved, but some files could not be read: see $summary" >&2 ;;
  3) echo "custody backup: INTEGRITY FAILURE in the repository (exit 3)" >&2 ;;
  4) echo "custody backup: key service denied or unreachable (exit 4)" >&2 ;;
  *) echo "custody backup: failed (exit $code)" >&2 ;;
esac
exit "$code"
