#!/usr/bin/env bash
# A single-node Slurm on this Debian machine, for the workbench's tests and for trying
# `workbench sweep --executor slurm` without a cluster.
#
#   scripts/slurm-single-node.sh start DIR   install (when missing) and start munged, slurmctld, slurmd
#   scripts/slurm-single-node.sh stop DIR    stop what `start DIR` started
#
# Everything lives under DIR (config, munge key and socket, state, spool, logs); nothing under
# /etc is changed. After `start`, point the Slurm commands at this cluster with
#   export SLURM_CONF=DIR/slurm.conf
# Exit status 77: Slurm cannot be installed or started here (not root, no apt-get); the reason is
# printed on stderr.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
cannot() { echo "slurm-single-node: cannot run Slurm here: $*" >&2; exit 77; }

[[ $# -eq 2 ]] || usage
action=$1
dir=$2

stop_daemon() {
    local pidfile=$1
    [[ -f $pidfile ]] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

if [[ $action == stop ]]; then
    [[ -d $dir ]] || exit 0
    stop_daemon "$dir/slurmd.pid"
    stop_daemon "$dir/slurmctld.pid"
    stop_daemon "$dir/munge/munged.pid"
    echo "single-node Slurm in $dir stopped"
    exit 0
fi
[[ $action == start ]] || usage

[[ $(id -u) -eq 0 ]] || cannot "starting slurmd and munged needs root (this is uid $(id -u))"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || cannot "slurmctld, slurmd, sbatch or munged is missing and there is no apt-get to install them"
    echo "installing Debian's Slurm and munge packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || cannot "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2 \
        || cannot "apt-get install slurmctld slurmd slurm-client munge failed"
fi
id munge >/dev/null 2>&1 || cannot "the munge package did not create the user munge"

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
# munged refuses keys and sockets in directories that others may write.
chmod 755 "$dir"
chown munge:munge "$dir/munge"
chmod 755 "$dir/munge"
key="$dir/munge/munge.key"
if [[ ! -f $key ]]; then
    head -c 1024 /dev/urandom >"$key"
fi
chown munge:munge "$key"
chmod 400 "$key"
socket="$dir/munge/munge.socket.2"
runuser -u munge -- munged --key-file="$key" --socket="$socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
    || cannot "munged did not start (see $dir/munge/munged.log)"

# This host as the only node, with the CPUs and memory slurmd itself detects.
node=$(slurmd -C | head -1)
host=$(hostname -s)
ctld_port=${SLURMCTLD_PORT:-6817}
slurmd_port=${SLURMD_PORT:-6818}
cat >"$dir/slurm.conf" <<EOF
ClusterName=workbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$dir/slurm.conf"
# -i: start afresh, ignoring any state a previous cluster in DIR left behind.
slurmctld -f "$SLURM_CONF" -i || cannot "slurmctld did not start (see $dir/slurmctld.log)"
slurmd -f "$SLURM_CONF" || cannot "slurmd did not start (see $dir/slurmd.log)"
for _ in $(seq 100); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
        echo "single-node Slurm up: node $host idle; export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
sinfo >&2 || true
cannot "the node did not become idle within 20 seconds (see $dir/slurmctld.log and $dir/slurmd.log)"
