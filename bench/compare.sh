#!/usr/bin/env bash
# Train-step throughput of fkpnet vs the PyTorch reference (../shared/bench), side by
# side in one run on this machine, alternating the two per net. Prints a markdown
# table with ratios. Usage: bench/compare.sh [baseline,lenet,vgg] [ROUNDS]
# Needs the setup (scripts/setup) done; PyTorch runs in the repo's .venv.
# The anchor is PyTorch as its best users run it on CPU: channels-last with jemalloc
# preloaded (Intel's CPU tuning guide; fkpnet links jemalloc itself), with the same
# MALLOC_CONF fkpnet uses. Debian's libjemalloc2 is installed where this runs as root
# with apt-get; elsewhere, without it, that column says so, and the ratios against the
# untuned peer remain.
set -euo pipefail
cd "$(dirname "$0")/.."
nets=${1:-baseline,lenet,vgg}
rounds=${2:-1}
ref=${FKPNET_BENCH_REF:-../shared/bench}
py=.venv/bin/python
fk=target/release/fkpnet
[ -x "$fk" ] || scripts/setup
iters() { case $1 in baseline) echo 200;; lenet) echo 60;; vgg) echo 6;; esac; }
find_jemalloc() { ls /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 2>/dev/null | head -1 || true; }
jemalloc=${FKPNET_JEMALLOC:-$(find_jemalloc)}
# The tuned anchor needs the library: install it where this machine can (root, apt-get).
if [ -z "$jemalloc" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "compare: installing libjemalloc2 (for PyTorch with jemalloc preloaded, the tuned anchor)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q libjemalloc2 >/tmp/compare-jemalloc.log 2>&1 ||
    { apt-get update -q >>/tmp/compare-jemalloc.log 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q libjemalloc2 >>/tmp/compare-jemalloc.log 2>&1; } ||
    echo "compare: could not install libjemalloc2 (see /tmp/compare-jemalloc.log); its column will say so" >&2
  jemalloc=$(find_jemalloc)
fi
# bf16 only where the CPU has a bf16 unit (AVX-512 BF16 or AMX): elsewhere both run
# it in emulation at about 1 image/s on VGG (2026-12-07, an AMD EPYC with AVX2 only: 20
# minutes for fkpnet's one bench) and the figures say nothing.
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null; then bf16=1; else bf16=; fi
modes="fp32 cl${bf16:+ bf16}"
[ -n "$jemalloc" ] && modes="$modes cl+je"

# best of ROUNDS for each cell; machines here are noisy
declare -A R
for r in $(seq "$rounds"); do
  for net in ${nets//,/ }; do
    for mode in $modes; do
      if [ "$mode" = cl+je ]; then
        out=$(cd "$ref" && PYTHONWARNINGS=ignore LD_PRELOAD="$jemalloc" MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 \
              "$OLDPWD/$py" "$OLDPWD/bench/peak_rss.py" "$net" cl 2>/dev/null)
      else
        out=$(cd "$ref" && PYTHONWARNINGS=ignore "$OLDPWD/$py" "$OLDPWD/bench/peak_rss.py" "$net" "$mode" 2>/dev/null)
      fi
      v=$(sed -n 's/.* \([0-9.]*\) img\/s.*/\1/p' <<<"$out")
      k="pt_${net}_$mode"; R[$k]=$(python3 -c "print(max(float('${R[$k]:-0}'), float('$v')))")
      R[ptmem_${net}_$mode]=$(sed -n 's/^peak_mib //p' <<<"$out")
    done
    for prec in fp32 ${bf16:+bf16}; do
      v=$("$fk" bench "nets/$net.yaml" --precision "$prec" --iterations "$(iters "$net")" --json |
          python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["cpu_peak"] or {}; print(d["train_img_per_s"], d["peak_mem_mib"], d["train_gflop_per_s"], d["train_pct_of_peak"] or 0, p.get("fp32_gflop_per_s") or 0, p.get("bf16_gflop_per_s") or 0)')
      set -- $v
      k="fk_${net}_$prec"
      # keep the best round's figures together
      if python3 -c "import sys; sys.exit(float('$1') < float('${R[$k]:-0}'))"; then
        R[$k]=$1; R[mem_${net}_$prec]=$2; R[gf_${net}_$prec]=$3; R[pct_${net}_$prec]=$4
      fi
      R[peak_fp32]=$5; R[peak_bf16]=$6
    done
  done
done

echo "| net | PyTorch fp32 | PyTorch channels-last | PyTorch cl + jemalloc | PyTorch bf16 | fkpnet fp32 | fkpnet bf16 | fkpnet fp32 / PyTorch cl + jemalloc | fkpnet fp32 / best untuned PyTorch | fkpnet bf16 / PyTorch bf16 | fkpnet fp32 GFLOP/s (% of peak) | peak MiB PyTorch cl+je / fkpnet fp32 |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for net in ${nets//,/ }; do
  python3 - "$net" "${R[pt_${net}_fp32]}" "${R[pt_${net}_cl]}" "${R[pt_${net}_cl+je]:-0}" "${R[pt_${net}_bf16]:-0}" "${R[fk_${net}_fp32]}" "${R[fk_${net}_bf16]:-0}" "${R[gf_${net}_fp32]}" "${R[pct_${net}_fp32]}" "${R[ptmem_${net}_cl+je]:-${R[ptmem_${net}_cl]}}" "${R[mem_${net}_fp32]}" <<'PY'
import sys
n, pf, pc, pj, pb, ff, fb, gf, pct, pm, fm = sys.argv[1], *map(float, sys.argv[2:])
best = max(pf, pc)
tuned = f"{pj:.0f}" if pj else "no libjemalloc2"
vs_tuned = f"**{ff/pj:.2f}x**" if pj else "-"
# 0: not run (no bf16 unit on this CPU).
pbs, fbs, ratio = (f"{pb:.0f}", f"{fb:.0f}", f"{fb/pb:.2f}x") if pb and fb else ("-", "-", "-")
print(f"| {n} | {pf:.0f} | {pc:.0f} | {tuned} | {pbs} | {ff:.0f} | {fbs} | {vs_tuned} | {ff/best:.2f}x | {ratio} | {gf:.0f} ({pct:.0f}%) | {pm:.0f} / {fm:.0f} |")
PY
done
echo
echo "images/s of a training step (forward, loss, backward, Adam), batch 64, 1x96x96; best of $rounds round(s);"
[ -n "$bf16" ] || echo "bf16: not run (this CPU has no bf16 unit, AVX-512 BF16 or AMX: both run it in emulation, about 1 image/s on VGG);"
echo "PyTorch cl + jemalloc: channels-last with LD_PRELOAD=${jemalloc:-(none)} MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 (the tuned anchor);"
echo "peak MiB: the whole process's peak resident memory (PyTorch: its tuned run; fkpnet: VmHWM of its fp32 bench);"
echo "% of peak: of the fp32 peak fkpnet bench measured on the same threads: ${R[peak_fp32]%.*} GFLOP/s fp32 FMA, ${R[peak_bf16]%.*} bf16 VDPBF16PS (0: not measured: no AVX-512 BF16, or an AMX CPU, whose bf16 unit those loops do not drive);"
echo "$(nproc) threads, $(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# Loading Kaggle's training.csv: fkpnet (parse, cache) vs pandas + numpy, same run.
csv=${FKPNET_BENCH_CSV:-../shared/data/faces/training.csv}
if [ -f "$csv" ]; then
  read -r parse cache < <("$fk" bench-data "$csv" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["parse_s"], d["cache_s"])')
  if "$py" -c "import pandas" 2>/dev/null; then
    pd=$("$py" bench/pandas_load.py "$csv" 2>/dev/null)
    echo
    echo "| loading $(basename "$csv") | seconds | vs pandas |"
    echo "|---|---|---|"
    python3 -c "p,c,d=$parse,$cache,$pd; print(f'| pandas.read_csv + numpy Image parsing | {d:.2f} | 1x |'); print(f'| fkpnet, parsing the CSV | {p:.2f} | {d/p:.1f}x |'); print(f'| fkpnet, from its binary cache | {c:.3f} | {d/c:.0f}x |')"
  else
    echo; echo "loading $(basename "$csv"): fkpnet parses it in ${parse}s, reads its cache in ${cache}s (pip install pandas into .venv to compare)"
  fi
fi
