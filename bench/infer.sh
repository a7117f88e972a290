#!/usr/bin/env bash
# Inference speed of the study's nets in three runtimes, side by side in one run:
# libtorch (`fkpnet bench`, fkpnet's own path), tract (fkpnet-infer's library, pure
# Rust) and onnxruntime (Python, from .venv), on the same ONNX exports; batch-1
# latency and batch-64 throughput, each runtime with its default threads on this
# machine's cores. Usage: bench/infer.sh [NETS] (default baseline,lenet,vgg).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
nets=${1:-baseline,lenet,vgg}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --release -q -p fkpnet-infer --example bench
fk="$root/target/release/fkpnet"
tract_bench="$root/target/release/examples/bench"
declare -A solver=([baseline]=baseline_adam [lenet]=adam [vgg]=vgg_adam)
printf '%-9s %-11s %12s %14s\n' net runtime "batch-1 ms" "batch-64 img/s"
for net in ${nets//,/ }; do
  s=${solver[$net]:?unknown net $net (baseline, lenet, vgg)}
  (cd "$tmp" && "$fk" train "$root/solvers/$s.yaml" --set data.train=synthetic --set max_iter=1 \
     --set test_interval=0 --set batch_size=4 --name "$net" -q >/dev/null 2>&1 &&
   "$fk" export "runs/$net" -o "$net.onnx" --format onnx --weights final >/dev/null 2>&1)
  onnx="$tmp/$net.onnx"
  lt1=$("$fk" bench "$root/nets/$net.yaml" --batch 1 --iterations 100 --json | python3 -c 'import json,sys; print(1000/json.load(sys.stdin)["infer_img_per_s"])')
  lt64=$("$fk" bench "$root/nets/$net.yaml" --batch 64 --iterations 10 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["infer_img_per_s"])')
  tr1=$("$tract_bench" "$onnx" 1 200 | python3 -c 'import json,sys; print(json.load(sys.stdin)["ms_per_batch"])')
  tr64=$("$tract_bench" "$onnx" 64 10 | python3 -c 'import json,sys; print(json.load(sys.stdin)["img_per_s"])')
  read -r or1 or64 < <("$root/.venv/bin/python" - "$onnx" <<'PY'
import sys, time, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
shape = s.get_inputs()[0].shape[1:]
def t(n, runs):
    x = np.random.rand(n, *shape).astype(np.float32)
    s.run(None, {"data": x})
    t0 = time.perf_counter()
    for _ in range(runs):
        s.run(None, {"data": x})
    return (time.perf_counter() - t0) / runs
print(t(1, 200) * 1000, 64 / t(64, 10))
PY
)
  printf '%-9s %-11s %12.3f %14.0f\n' "$net" libtorch "$lt1" "$lt64" "$net" tract "$tr1" "$tr64" "$net" onnxruntime "$or1" "$or64"
done
