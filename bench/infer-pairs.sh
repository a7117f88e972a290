#!/usr/bin/env bash
# Latency of fkpnet's own path (`fkpnet bench --batch B`, B = 1 unless given) against onnxruntime on
# the same net's ONNX export, in alternated short chunks: this machine's speed moves by up
# to 2x within minutes (other tenants' steal time), so a runtime compares only with the
# other measured right beside it, and the least disturbed chunk of each (its minimum)
# is the figure. At batch 1 each chunk is a mean over 200 predictions of the one and
# over 200 of the other (fkpnet's `bench` after its warm-up, onnxruntime's after 50
# warm-up runs); at batch 64 over 20 and 40 batches (10 warm-up runs): `bench` also
# times as many training steps as half its predictions, which VGG's take 2 s each.
# Both are in ms per batch.
# Usage: bench/infer-pairs.sh [NET] [CHUNKS] [BATCH] (default lenet 8 1).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
net=${1:-lenet}
chunks=${2:-8}
batch=${3:-1}
# Batches per chunk: onnxruntime's as many as 200 faces, at least 40; fkpnet's (twice
# `bench`'s iterations) as many at batch 1, else as many as 100 faces, at least 20.
ort_runs=$(( 200 / batch > 40 ? 200 / batch : 40 ))
fk_iters=$(( batch == 1 ? ort_runs / 2 : (50 / batch > 10 ? 50 / batch : 10) ))
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
declare -A solver=([baseline]=baseline_adam [lenet]=adam [vgg]=vgg_adam)
s=${solver[$net]:?unknown net $net (baseline, lenet, vgg)}
fk="$root/target/release/fkpnet"
(cd "$tmp" && "$fk" train "$root/solvers/$s.yaml" --set data.train=synthetic --set max_iter=1 \
   --set test_interval=0 --set batch_size=4 --name "$net" -q >/dev/null 2>&1 &&
 "$fk" export "runs/$net" -o "$net.onnx" --format onnx --weights final >/dev/null 2>&1)
echo "batch $batch"
printf '%-6s %12s %12s\n' chunk "fkpnet ms" "ort ms"
fks=() orts=()
for i in $(seq 1 "$chunks"); do
  fk_ms=$("$fk" bench "$root/nets/$net.yaml" --batch "$batch" --iterations "$fk_iters" --json |
    python3 -c "import json,sys; print(1000 * $batch / json.load(sys.stdin)['infer_img_per_s'])")
  ort_ms=$("$root/.venv/bin/python" - "$tmp/$net.onnx" "$batch" "$ort_runs" <<'PY'
import sys, time, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
batch, runs = int(sys.argv[2]), int(sys.argv[3])
x = np.random.rand(batch, *s.get_inputs()[0].shape[1:]).astype(np.float32)
for _ in range(max(runs // 4, 10)):
    s.run(None, {"data": x})
t0 = time.perf_counter()
for _ in range(runs):
    s.run(None, {"data": x})
print((time.perf_counter() - t0) / runs * 1000)
PY
)
  fks+=("$fk_ms") orts+=("$ort_ms")
  printf '%-6s %12.3f %12.3f\n' "$i" "$fk_ms" "$ort_ms"
done
python3 - "${fks[*]}" "${orts[*]}" <<'PY'
import statistics, sys
fk, ort = ([float(v) for v in a.split()] for a in sys.argv[1:])
print(f"best   {min(fk):12.3f} {min(ort):12.3f}")
print(f"median {statistics.median(fk):12.3f} {statistics.median(ort):12.3f}")
# > 1: fkpnet is the faster.
print(f"fkpnet at {min(ort) / min(fk):.2f}x onnxruntime's speed (best chunks), "
      f"{statistics.median(ort) / statistics.median(fk):.2f}x (medians)")
PY
