#!/bin/bash
# The GPU sampler rows of issue 9 in one device call: CoinRun size, batch 1, 25 MaskGIT steps,
# 16-frame buffer, random params; each XLA_FLAGS setting in its own process (XLA reads the flags
# once). Usage on the device machine: bash experiments/bench_gpu_sampler.sh $OUT
# FLOPs per frame (experiments/bench_gpu.py --parts=flops --size=coinrun, counted on the CPU):
# 1.024e12 with the causal tokenizer's buffer decode, 7.43e11 with a per-frame tokenizer.
out=${1:-bench_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv 2>/dev/null
b="python3 experiments/bench_gpu.py --parts=sample --size=${SIZE:-coinrun} --steps=${STEPS:-30}"
f=--frame_flops=1.024e12
timeout 330 $b $f --out="$out/sample_default.json" --sample_rows=bfloat16:rope:prof,\
bfloat16:rope:unroll=25:prof,bfloat16:rope:unroll=25:cast:tok=none:prof,bfloat16:rope:cast,\
bfloat16:rope:tok=none,bfloat16:rope:unroll=5 2>&1 | grep -v "^[WI][0-9]"
XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,\
CONDITIONAL --xla_gpu_graph_min_graph_size=1" timeout 90 $b $f --out="$out/sample_cbwhile.json" \
  --sample_rows=bfloat16:rope:prof,bfloat16:rope:unroll=5 2>&1 | grep -v "^[WI][0-9]"
XLA_FLAGS="--xla_gpu_enable_command_buffer=" timeout 45 $b $f --out="$out/sample_cboff.json" \
  --sample_rows=bfloat16:rope 2>&1 | grep -v "^[WI][0-9]"
python3 - "$out" <<'PY'
import json, glob, sys
for p in sorted(glob.glob(sys.argv[1] + "/sample_*.json")):
    for r in json.load(open(p))["rows"]:
        if "error" in r:
            print(p.split("/")[-1], r.get("args"), r["error"][:200]); continue
        pr = r.get("profile") or {}
        print(f"{p.split('/')[-1][7:-5]:9s} {r['spec']:40s} p50 {r['p50_ms']:6.1f} p95 "
              f"{r['p95_ms']:6.1f} fps {r['frames_per_s']:5.1f} first {r['first_step_s']:5.1f}s "
              f"mfu {r.get('mfu', 0):.3f} kern {pr.get('kernel_ms_per_step', 0):5.1f}ms "
              f"n {pr.get('kernels_per_step', 0):6.0f} wall {pr.get('wall_ms_per_step', 0):5.1f}")
PY
