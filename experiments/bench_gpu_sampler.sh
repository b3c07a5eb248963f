#!/bin/bash
# The GPU sampler rows of issue 9 in one device call: CoinRun size, batch 1, 25 MaskGIT steps,
# 16-frame buffer, random params. Usage on the device machine (the image lacks ml_collections:
# carry a copy, RESULTS.md "GPU sampler"): bash experiments/bench_gpu_sampler.sh $OUT
# FLOPs per frame (experiments/bench_gpu.py --parts=flops --size=coinrun, counted on the CPU):
# 1.024e12 with the causal tokenizer's buffer decode, 7.43e11 with a per-frame tokenizer
# (tok=none rows: scale their printed MFU by 0.726).
# Seen on an H100 (2026-11-27): after a profiled row, the next row in the same process did not
# finish within minutes (twice; cause not found), so each process profiles last.
# attn=cudnn: cuDNN fused attention (frames padded 257 -> 264), fewer kernels per pass.
out=${1:-bench_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv 2>/dev/null
b="python3 experiments/bench_gpu.py --parts=sample --size=${SIZE:-coinrun} --steps=${STEPS:-30}"
f=--frame_flops=1.024e12
timeout 240 $b $f --out="$out/sample_default.json" --sample_rows=bfloat16:rope,\
bfloat16:rope:cast,bfloat16:rope:cast:tok=none,bfloat16:rope:cast:unroll=5,\
bfloat16:rope:cast:tok=none:attn=cudnn,bfloat16:rope:cast:tok=none:prof 2>&1 | grep -v "^[WI][0-9]"
python3 - "$out" <<'PY'
import json, glob, sys
for p in sorted(glob.glob(sys.argv[1] + "/sample_*.json")):
    for r in json.load(open(p))["rows"]:
        if "error" in r:
            print(p.split("/")[-1], r.get("args"), r["error"][:200]); continue
        pr = r.get("profile") or {}
        print(f"{r['spec']:40s} p50 {r['p50_ms']:6.1f} p95 {r['p95_ms']:6.1f} fps "
              f"{r['frames_per_s']:5.1f} first {r['first_step_s']:5.1f}s mfu {r.get('mfu', 0):.3f} "
              f"kern {pr.get('kernel_ms_per_step', 0):5.1f}ms n {pr.get('kernels_per_step', 0):6.0f} "
              f"wall {pr.get('wall_ms_per_step', 0):5.1f}")
PY
