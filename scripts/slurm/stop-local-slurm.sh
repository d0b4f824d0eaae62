#!/usr/bin/env bash
# Stop the local SLURM started by scripts/slurm/start-local-slurm.sh.
#
# Stops exactly the PIDs recorded in $GRADATLAS_SLURM_RUN/pids (default /run/gradatlas-slurm/pids),
# in reverse start order (slurmd, slurmctld, munged), and only while each PID still runs the
# program it was recorded for (guards against PID reuse). SIGTERM first, SIGKILL after 15 s.
# Afterwards it deletes that PID file; config, logs and spool stay where they are.
set -euo pipefail

RUN_DIR=${GRADATLAS_SLURM_RUN:-/run/gradatlas-slurm}
PIDFILE=$RUN_DIR/pids

if [[ ! -e $PIDFILE ]]; then
    echo "stop-local-slurm: nothing recorded in $PIDFILE; nothing to stop"
    exit 0
fi

stopped=() gone=() failed=()
# reverse order: last started first
mapfile -t entries < <(tac "$PIDFILE")
for entry in "${entries[@]}"; do
    read -r name pid <<<"$entry"
    [[ -n ${name:-} && ${pid:-} =~ ^[0-9]+$ ]] || continue
    if [[ ! -r /proc/$pid/comm || $(cat "/proc/$pid/comm" 2>/dev/null) != "$name" ]]; then
        gone+=("$name:$pid")
        continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do
        [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || break
        # a zombie (not reaped by its parent) has stopped too
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
        sleep 0.1
    done
    if [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" \
        && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
        if [[ -r /proc/$pid/comm && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
            failed+=("$name:$pid")
            continue
        fi
    fi
    stopped+=("$name:$pid")
done

if ((${#failed[@]})); then
    echo "stop-local-slurm: ERROR: could not stop ${failed[*]}; $PIDFILE kept" >&2
    exit 1
fi
rm -f "$PIDFILE"
echo "stop-local-slurm: stopped ${stopped[*]:-nothing}${gone:+; already gone: ${gone[*]}}"
