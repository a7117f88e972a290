#!/usr/bin/env bash
# The sweep measurements in README: a 16-trial grid of LeNet variants on the shared
# faces (4 learning rates x 2 widths x 2 seeds, 480 iterations each), trained
#   1. one after another (--jobs 1, 2 threads),
#   2. two at once (--jobs 2, one thread each),
#   3. one after another with ASHA stopping the losing trials: rungs at 60 and 180
#      (R 3), and at 180 and 360 (R 2),
# printing each one's wall time and the best val RMSE it found.
# Usage: bench/sweep.sh [OUT_DIR] (default: a temp dir). About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${1:-$(mktemp -d)}
mkdir -p "$out"
bin="$root/target/release/fkpnet"
data=${FKPNET_DATA:-$root/../shared/data}/faces/training.csv
space=(solvers/lenet_adam.yaml --set "data.train=$data" --set max_iter=480 --set test_interval=60
  --set display=60 --set base_lr=3e-3,1e-3,3e-4,1e-4 --set layers.fc1.num_output=100,500 --set random_seed=0,1)
run() {
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$bin" sweep "${space[@]}" --name "$name" --runs-dir "$out/runs" -q "$@" > "$out/$name.txt" 2> "$out/$name.err"
  local t1; t1=$(date +%s.%N)
  local best; best=$(grep -m1 '^best trial:' "$out/$name.txt" | sed 's/.*val RMSE \([0-9.]*\) px.*/\1/')
  local stopped; stopped=$(grep -c 'stopped at iteration' "$out/$name.txt" || true)
  printf '%-10s %6.1f min  best val %s px  (%s of 16 stopped early)\n' "$name" "$(echo "($t1 - $t0) / 60" | bc -l)" "$best" "$stopped"
}
echo "sweep bench: $(nproc) cores, results in $out"
run seq
run jobs2 --jobs 2
run asha60 --stop asha --grace 60 --reduction 3
run asha180 --stop asha --grace 180 --reduction 2
