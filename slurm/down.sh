#!/usr/bin/env bash
# Stop the loopback SLURM test cluster started by slurm/up.sh.
#
#   bash slurm/down.sh            # cancel remaining jobs, stop the daemons, keep state (warm restart)
#   bash slurm/down.sh --purge    # also delete $HARNESS_SLURM_DIR (job history, database, logs)
#
# Daemons are stopped by the pids in their pid files, in the order slurmd, slurmctld, slurmdbd,
# mariadbd, munged: nothing else on the machine is touched.
set -euo pipefail
source "$(dirname "$0")/common.sh"
purge=0
case "${1:-}" in
  "") ;;
  --purge) purge=1 ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
if [ ! -d "$D" ]; then
  log "nothing to stop ($D does not exist)"
  exit 0
fi
take_lock
rm -f "$ENV_FILE"
if alive slurmctld && command -v squeue >/dev/null; then
  jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ') || true
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while [ -n "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
  fi
fi
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do stop "$daemon"; done
if [ "$purge" = 1 ]; then
  exec 9>&-
  rm -rf "$D"
  log "removed $D"
fi
