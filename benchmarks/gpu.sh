#!/usr/bin/env bash
# LTG on one GPU at Stable Diffusion 1.5 shapes (512², bf16, random weights), < 12 minutes:
# unguided vs LTG images/s, sampler compile time, largest batch with and without remat.
# Needs jax==0.10.2 with its CUDA plugin (pip install "jax[cuda12]==0.10.2") and this repo
# installed (pip install -e .). Results: stdout and $OUT/gpu_sd15.jsonl; paste into RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/ltg_bench}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PYTHON" -c "import jax; print(jax.__version__, jax.devices())"
timeout 470 "$PYTHON" -m benchmarks.gpu_sd15 --shapes sd15 --dtype bfloat16 --batch 8 \
  --steps 25 --budget_s 420 --out "$OUT/gpu_sd15.jsonl" "$@" 2>&1 | tee "$OUT/gpu_sd15.log"
# SDXL base at 1024² (bf16 weights, remat decoder / all), compiled for the GPU, never run:
# XLA's memory analysis says whether a guided step fits one 80 GB accelerator.
timeout 240 "$PYTHON" -m benchmarks.real_scale_cost --shapes sdxl --dtypes bfloat16 \
  --remats decoder,all --variants "unguided,z0 tiny,z0 full" --out "$OUT/cost_gpu.jsonl" \
  2>&1 | tee "$OUT/cost_gpu.log" || true
