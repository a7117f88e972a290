#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for the sweep test: `cluster.sh start DIR`
# writes DIR/slurm.conf, starts slurmctld and slurmd as root in DIR, and waits until
# the node is idle; `cluster.sh stop DIR` stops both. AuthType=auth/none and
# CredType=cred/none need no munge daemon (a test cluster only: anyone on the
# machine could submit as anyone). Prints why and exits 2 when it cannot run here.
set -euo pipefail
cmd=${1:?start|stop} dir=${2:?a directory}
conf="$dir/slurm.conf"
export SLURM_CONF="$conf"
case "$cmd" in
start)
  for t in slurmctld slurmd sbatch squeue sinfo; do
    command -v "$t" >/dev/null || { echo "skip: $t not found (Debian: apt install slurm-wlm; scripts/setup-slurm does)"; exit 2; }
  done
  [ "$(id -u)" = 0 ] || { echo "skip: slurmd must run as root to start jobs as their users"; exit 2; }
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  # Free ports: the first of a few candidate pairs nobody listens on.
  port=
  for p in 16817 26817 36817 46817; do
    if ! (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! (echo > "/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then port=$p; break; fi
  done
  [ -n "$port" ] || { echo "skip: no free port pair for slurmctld/slurmd"; exit 2; }
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
  cat > "$conf" <<CONF
ClusterName=fkpnettest
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
KillWait=30
NodeName=localhost CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  slurmctld -i -f "$conf" >> "$dir/log/start.log" 2>&1 &
  slurmd -N localhost -f "$conf" >> "$dir/log/start.log" 2>&1 &
  for _ in $(seq 100); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
    [ "$state" = idle ] && { echo "slurm up on port $port ($cpus CPUs)"; exit 0; }
    sleep 0.2
  done
  echo "skip: the test cluster did not come up (node state: ${state:-none}); logs in $dir/log:"
  tail -5 "$dir"/log/*.log || true
  "$0" stop "$dir" || true
  exit 2
  ;;
stop)
  for d in slurmd slurmctld; do
    [ -f "$dir/$d.pid" ] && kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
  done
  sleep 0.5
  ;;
esac
