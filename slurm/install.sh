#!/usr/bin/env bash
# Install SLURM (slurmctld, slurmd, slurmdbd, client commands), munge and MariaDB with apt, if missing.
#
# Idempotent: exits at once when every binary is present. Needs root (or password-less sudo) and
# apt-get; otherwise it fails with one line saying so. apt cannot start services on machines without
# systemd ("policy-rc.d denied execution of start"): that is expected, slurm/up.sh starts the daemons.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
BINARIES=(slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mungekey mariadbd mariadb-install-db mariadb)

missing=()
for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
[ ${#missing[@]} -eq 0 ] && exit 0

fail() { printf '[slurm] error: SLURM is not installed (missing: %s) and cannot be installed here: %s\n' "${missing[*]}" "$1" >&2; exit 1; }
command -v apt-get >/dev/null 2>&1 || fail "no apt-get (install SLURM >= 22.05, munge and MariaDB by hand)"
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  sudo -n true 2>/dev/null || fail "not root and no password-less sudo"
  SUDO=(sudo -n)
fi

printf '[slurm] installing %s with apt (missing: %s)\n' "${PACKAGES[*]}" "${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
APT=("${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
t0=$SECONDS
logfile=$(mktemp /tmp/harness-slurm-apt.XXXXXX.log)
if ! { "${APT[@]}" update -q && "${APT[@]}" install -y -q --no-install-recommends "${PACKAGES[@]}"; } >"$logfile" 2>&1; then
  tail -n 15 "$logfile" | sed 's/^/    /' >&2
  fail "apt-get failed (full log: $logfile)"
fi
for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || fail "apt-get ran but $b is still missing (log: $logfile)"; done
rm -f "$logfile"
printf '[slurm] installed in %ss\n' "$((SECONDS - t0))" >&2
