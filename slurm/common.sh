# Shared settings of the loopback SLURM test cluster; sourced by install.sh, up.sh, down.sh, status.sh.
#
# Everything the cluster writes (configs, state, spool, logs, pid files, the MariaDB datadir, the munge
# key and socket) lives under one directory, HARNESS_SLURM_DIR (default /tmp/harness-slurm), never in
# the git tree. Ports come from HARNESS_SLURM_PORT (default 6817): slurmctld, slurmd, slurmdbd and
# MariaDB listen on 127.0.0.1 at PORT, PORT+1, PORT+2 and PORT+3.

SLURM_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
D=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
case $D in /*) ;; *) D=$PWD/$D ;; esac
ETC=$D/etc
LOGS=$D/log
RUN=$D/run
MUNGE_DIR=$D/munge
DATADIR=$D/mysql
CONF=$ETC/slurm.conf
DBD_CONF=$ETC/slurmdbd.conf
ENV_FILE=$D/env.sh
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
DB_SOCKET=$RUN/mariadb.sock
PORT=${HARNESS_SLURM_PORT:-6817}
CTLD_PORT=$PORT
SLURMD_PORT=$((PORT + 1))
DBD_PORT=$((PORT + 2))
DB_PORT=$((PORT + 3))
WAIT_S=${HARNESS_SLURM_TIMEOUT:-60}
CLUSTER_NAME=harness
NODE=$(hostname -s)
export SLURM_CONF=$CONF
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

log() { printf '[slurm] %s\n' "$*" >&2; }

# die MESSAGE [LOGFILE]: one clear message (plus the tail of the daemon's log) and exit 1.
die() {
  printf '[slurm] error: %s\n' "$1" >&2
  if [ -n "${2:-}" ]; then
    if [ -s "$2" ]; then
      printf '[slurm] last lines of %s:\n' "$2" >&2
      tail -n 15 "$2" | sed 's/^/    /' >&2
    else
      printf '[slurm] (%s is empty or missing)\n' "$2" >&2
    fi
    if [ "$2" = "${MARK_FILE:-}" ] && [ -s "$MARK_OUT" ]; then
      printf '[slurm] its output on start-up (%s):\n' "$MARK_OUT" >&2
      tail -n 10 "$MARK_OUT" | sed 's/^/    /' >&2
    fi
  fi
  exit 1
}

# alive NAME: the daemon NAME runs with the pid in $RUN/NAME.pid (the pid is checked against its name,
# so a stale pid file after a reboot does not count).
alive() {
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

# mark NAME LOGFILE: before starting daemon NAME, remember where its LOGFILE ends, so that wait_for
# can spot a fatal error written after that (the daemon died: no point waiting for the timeout).
# spawn then sends what the daemon prints before it opens its log to $LOGS/NAME.out.
mark() { MARK_FILE=$2; MARK_OFFSET=$(stat -c %s "$2" 2>/dev/null || echo 0); MARK_OUT=$LOGS/$1.out; }

# spawn COMMAND...: start a daemon with no terminal, no inherited pipes (a caller capturing our output
# would otherwise wait for it) and without the lock on fd 9.
spawn() { setsid "$@" </dev/null >"$MARK_OUT" 2>&1 9>&- & }

FATAL_PATTERN='(fatal:|\[ERROR\] Aborting|\[ERROR\] Can.t start server)'

# wait_for SECONDS WHAT LOGFILE COMMAND...: poll COMMAND every 0.2 s; die with the log tail on timeout,
# or at once when the log (since `mark`) shows a fatal error.
wait_for() {
  local seconds=$1 what=$2 logfile=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$logfile" = "${MARK_FILE:-}" ] &&
      { tail -c "+$((MARK_OFFSET + 1))" "$logfile"; cat "$MARK_OUT"; } 2>/dev/null | grep -qE "$FATAL_PATTERN"; then
      die "$what failed to start" "$logfile"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "$what not ready after ${seconds}s (HARNESS_SLURM_TIMEOUT=$WAIT_S)" "$logfile"
    sleep 0.2
  done
}

# Hold $D/lock for the rest of the script, so that concurrent up/down calls (several pytest sessions
# in one checkout) run one after another. Daemons are started with fd 9 closed so they never hold it.
take_lock() {
  mkdir -p "$D"
  exec 9>"$D/lock"
  flock -w "${HARNESS_SLURM_LOCK_WAIT:-600}" 9 || die "another slurm/up.sh or down.sh holds $D/lock"
}

# stop NAME [SECONDS]: SIGTERM the daemon of $RUN/NAME.pid, SIGKILL it after SECONDS (default 20).
stop() {
  local name=$1 seconds=${2:-20} pid deadline
  if alive "$name"; then
    pid=$(cat "$RUN/$name.pid")
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + seconds))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM for ${seconds}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$RUN/$name.pid"
}
