#!/usr/bin/env bash
# Every GPU check in one call, for a lent GPU machine (device tool). Not run by CI.
#   Before the call, here:  echo /.whl/ >> .git/info/exclude, then download the pycocotools and py-spy
#   wheels for Python 3.12 into .whl (see the device README); carry [".whl"].
# Results go to $OUT (or ./gpu-check-out); copy the numbers into detrdoctor/profiles/calibration/ and the issue notes.
set -uo pipefail
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 DETRDOCTOR_CACHE=/tmp/detrdoctor-cache
run() { echo "== $*"; timeout 240 "$@" 2>&1 | tee -a "$out/gpu_check.log"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
# 1. env-check judged on a real GPU node (CUDA, driver, arch, bf16, NVML).
run python3 -m detrdoctor.cli env-check --json > "$out/env_check.json"
# 2. memprofile: measured sweep of DETR-R50 with the estimate's error per point, saved as a calibration record.
run python3 benchmarks/memprofile_gpu_check.py --profile detr-r50 --batch-sizes 1,2,4,8 --save
cp detrdoctor/profiles/calibration/*.json "$out/" 2>/dev/null
# 3. AMP training steps + NVML readings + throughput: tiny fp16 and bf16 runs through the trainer (plain log lines).
for amp in fp16 bf16 off; do
  run python3 -m detrdoctor.cli train --profile detr-r50-fast --backbone-weights none --max-steps 30 \
      --eval-every 0 --log-every 5 --amp "$amp" --device cuda --no-dashboard --output-dir "/tmp/run-$amp"
  cp "/tmp/run-$amp/metrics.jsonl" "$out/metrics-$amp.jsonl" 2>/dev/null
done
# 4. DataLoader pin_memory / host→device copy on a real GPU.
run python3 -m detrdoctor.cli loader-bench --profile demo --num-workers 0,4,8 --pin-memory both --json > "$out/loader_bench.json"
# 5. Fused vs reference attention (issue 20): peak memory and img/s of real DETR-R50 training steps at the
#    worst-case 1333×1333 batch (each point in a fresh process), then interleaved train/inference timings
#    at 800×800, fp32 and bf16, the paper's attention dropout. Compare the peaks with `memprofile --estimate`.
for amp in off bf16; do
  run python3 benchmarks/bench_attention.py --memory --device cuda --amp "$amp" --size 1333 --batch-size 4 \
      --attention-dropout 0.1
  run python3 benchmarks/bench_attention.py --device cuda --amp "$amp" --size 800 --batch-size 4 --rounds 20 \
      --attention-dropout 0.1
done
run python3 -m detrdoctor.cli memprofile --profile detr-r50 --estimate --batch-sizes 4 --json \
    > "$out/memprofile_estimate_b4.json"
# 6. --batch-size auto measured (issue 30): memprofile's estimate checked by measuring it in a fresh process, the
#    choice in a batch_size_auto event and config.toml; then a batch that cannot fit, retried at half the images
#    per forward pass (oom_retry events, gradient accumulation keeping the 256-image optimizer step).
run python3 -m detrdoctor.cli train --profile detr-r50-fast --backbone-weights none --batch-size auto --max-steps 5 \
    --eval-every 0 --log-every 1 --device cuda --no-dashboard --output-dir /tmp/run-auto
cp /tmp/run-auto/metrics.jsonl "$out/metrics-auto.jsonl" 2>/dev/null
cp /tmp/run-auto/config.toml "$out/config-auto.toml" 2>/dev/null
run python3 -m detrdoctor.cli train --profile detr-r50 --backbone-weights none --batch-size 256 --max-steps 2 \
    --eval-every 0 --log-every 1 --device cuda --no-dashboard --output-dir /tmp/run-oom
cp /tmp/run-oom/metrics.jsonl "$out/metrics-oom.jsonl" 2>/dev/null
# 7. Training-step levers (issue 31): DETR-R50 img/s at 800×800, batch 4, frozen backbone, with and without each
#    lever (BN fold undone, channels-last, bf16 and fp16 AMP, foreach instead of fused AdamW, torch.compile of the
#    whole model) and the official loop, each interleaved with ours as it ships; then ours against Hugging Face
#    (transformers installed by the benchmark when missing: needs the wheel in .whl, the machine is offline).
run python3 benchmarks/bench_vs_hf.py --device cuda --size 800 --batch-size 4 --rounds 5 --steps 5 --warmup 3 \
    --attention-dropout 0.1 --levers unfolded channels-last bf16 fp16 foreach official
run python3 benchmarks/bench_vs_hf.py --device cuda --size 800 --batch-size 4 --rounds 3 --steps 5 --warmup 3 \
    --attention-dropout 0.1 --levers compile
run python3 benchmarks/bench_vs_hf.py --device cuda --size 800 --batch-size 4 --rounds 5 --steps 5 --warmup 3 \
    --attention-dropout 0.1 0
run python3 benchmarks/bench_vs_hf.py --device cuda --size 800 --batch-size 4 --rounds 5 --steps 5 --warmup 3 \
    --attention-dropout 0.1 --amp bf16 --channels-last
