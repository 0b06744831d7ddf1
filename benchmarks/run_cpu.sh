#!/usr/bin/env bash
# All CPU benchmarks of RESULTS.md, one after the other (about 40 minutes on 2 idle cores).
# Run on an otherwise idle machine: torch's OpenMP threads crawl when a core is taken.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/ltg_bench/results}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$OUT"
"$PY" -m benchmarks.guidance_overhead --settings embedded,tiny_sd --batches 1,8,64 \
  --budget_s 12 --out "$OUT/overhead.jsonl" 2>&1 | tee "$OUT/overhead.log"
"$PY" -m benchmarks.vs_pytorch --settings embedded,tiny_sd --batches 1,8,64 --num_steps 10 \
  --threads 2 --budget_s 25 --torch_compile --out "$OUT/vs_pytorch.jsonl" 2>&1 \
  | tee "$OUT/vs_pytorch.log"
"$PY" -m benchmarks.compile_and_memory --settings embedded,tiny_sd --compile_batch 8 \
  --num_steps 25 --memory_batch 64 --rss --out "$OUT/compile_memory.jsonl" 2>&1 \
  | tee "$OUT/compile_memory.log"
"$PY" -m benchmarks.remat_probe --batch 64 2>&1 | tee "$OUT/remat_probe.log"
for conv in ours lax; do  # lax: before ltg_jax.models.conv's explicit input-gradient VJP
  "$PY" -m benchmarks.sampler_overhead --setting embedded --batch 8 --steps 5 --budget_s 8 \
    --conv "$conv" 2>&1 | tee "$OUT/sampler_overhead_$conv.log"
done
"$PY" -m benchmarks.profile_step --setting embedded --batch 8 2>&1 | tee "$OUT/profile_step.log"
"$PY" -m benchmarks.dtype_step --settings embedded,tiny_sd --batches 8,64 \
  --out "$OUT/dtype_step.jsonl" 2>&1 | tee "$OUT/dtype_step.log"
