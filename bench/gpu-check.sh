#!/usr/bin/env bash
# One prepared check on a machine with an NVIDIA GPU (CI has none; CPU stays the
# tested path): set up, build, train LeNet briefly on CUDA with everything on the
# GPU, then bench the three nets on CUDA. Meant to finish in a few minutes; output
# goes to $OUT (or ./gpu-check) when set.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
scripts/setup 2>&1 | tail -3
fk=target/release/fkpnet
data=${FKPNET_DATA:-../shared/data}/faces/training.csv
[ -f "$data" ] || data=synthetic
set -x
timeout 300 "$fk" train solvers/adam.yaml --set device=cuda --set data.train="$data" \
  --set max_iter=480 --runs-dir "$out/runs" --name lenet_cuda 2>&1 | tail -25 | tee "$out/train.txt"
for net in baseline lenet vgg; do
  for prec in fp32 bf16; do
    timeout 120 "$fk" bench "nets/$net.yaml" --device cuda --precision "$prec" --iterations 30 --json | tee -a "$out/bench.jsonl"
  done
done
