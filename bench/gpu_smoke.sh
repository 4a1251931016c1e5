#!/usr/bin/env bash
# GPU smoke test: a few bf16 training steps under DDP and under FSDP on every visible GPU, a resume, then batched
# generation; prints tokens/s and peak memory per GPU. Skips cleanly (exit 0) where no CUDA GPU is visible.
#
#   bash bench/gpu_smoke.sh                 # PYTHON=.venv/bin/python STEPS=30 OUT=/tmp/vlbridge-gpu-smoke
#
# The stack is the tiny-cpu preset with a 12-layer, 768-wide LLM (large enough to exercise sharding and the
# attention kernels, small enough to run in a minute on any GPU); nothing is downloaded.
set -euo pipefail

PYTHON=${PYTHON:-python}
STEPS=${STEPS:-30}
OUT=${OUT:-$(mktemp -d -t vlbridge-gpu-smoke-XXXX)}
LLM='{"model_type": "llama", "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4, "max_position_embeddings": 1024, "tie_word_embeddings": false, "rms_norm_eps": 1e-5}'

NGPU=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$NGPU" -eq 0 ]; then
    echo "gpu_smoke: no CUDA GPU visible to $PYTHON (torch $("$PYTHON" -c 'import torch; print(torch.__version__)')); skipped"
    exit 0
fi
echo "gpu_smoke: $NGPU GPU(s): $("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))'); out $OUT"

"$PYTHON" -m vlbridge data shapes --out "$OUT/data" --n 1200 --seed 0 > /dev/null

report() {   # steady-state tokens/s and peak memory (rank 0) from a run's log.jsonl
    "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/log.jsonl") if '"loss"' in l]
first, last = rows[0], rows[-1]
done = last["tokens_per_s"] * last["elapsed_s"] - first["tokens_per_s"] * first["elapsed_s"]
rate = done / max(last["elapsed_s"] - first["elapsed_s"], 1e-9)
print(f"{sys.argv[2]:<34} loss {first['loss']:.3f} -> {last['loss']:.3f}   {rate:10,.0f} tokens/s   "
      f"peak {last['peak_mem_mb']:8.0f} MiB per GPU")
EOF
}

train() {    # strategy, out dir, extra flags
    local strategy=$1 out=$2; shift 2
    "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m vlbridge train --preset tiny-cpu \
        --data "$OUT/data" --out "$out" --steps "$STEPS" --batch-size 16 --train.train-vision false \
        --model.llm.arch "$LLM" --train.device cuda --train.precision bf16 --train.strategy "$strategy" \
        --train.eval-every 0 --train.save-every 10 --train.log-every 5 --train.warmup-steps 5 --overwrite "$@" \
        2> "$out.log" > /dev/null || { tail -30 "$out.log"; exit 1; }
}

train ddp "$OUT/ddp"
report "$OUT/ddp" "DDP, bf16"
train fsdp "$OUT/fsdp"
report "$OUT/fsdp" "FSDP, bf16"
train fsdp "$OUT/fsdp_ckpt" --train.activation-checkpointing llm
report "$OUT/fsdp_ckpt" "FSDP, bf16, activation checkpointing"

# resume under FSDP: stop half-way, continue, compare with the uninterrupted run's weights
train fsdp "$OUT/fsdp_split" --train.stop-after $((STEPS / 2))
"$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$NGPU" -m vlbridge train --config "$OUT/fsdp_split/config.json" \
    --out "$OUT/fsdp_split" --resume --train.stop-after none 2> "$OUT/fsdp_resume.log" > /dev/null \
    || { tail -30 "$OUT/fsdp_resume.log"; exit 1; }
"$PYTHON" - "$OUT" <<'EOF'
import sys
from safetensors.torch import load_file
a = load_file(sys.argv[1] + "/fsdp/final/model.safetensors")
b = load_file(sys.argv[1] + "/fsdp_split/final/model.safetensors")
worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
print(f"{'FSDP resume vs uninterrupted':<34} max |weight difference| {worst:.2e}")
EOF

# generation: batched, KV cache, bf16 weights on one GPU
"$PYTHON" - "$OUT" <<'EOF'
import sys, time, torch
from vlbridge.data.records import load_records
from vlbridge.data.dataset import collate
from vlbridge.generate import GenerationConfig, generate
from vlbridge.models.vlm import VLBridgeModel
from vlbridge.train.data import make_dataset
from vlbridge.config import DataConfig
from vlbridge.data.records import SkipReport
model = VLBridgeModel.from_pretrained(sys.argv[1] + "/fsdp/final", device="cuda", dtype=torch.bfloat16)
records = load_records(sys.argv[1] + "/data/test.json")[:64]
data = make_dataset(records, model, DataConfig(), SkipReport(), for_generation=True)
batch = collate([data[i] for i in range(len(data))])
gen = GenerationConfig(max_new_tokens=32)
generate(model, batch.input_ids[:4], batch.pixel_values[:sum(batch.image_counts[:4])], gen)     # warm-up
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
out = generate(model, batch.input_ids, batch.pixel_values, gen)
torch.cuda.synchronize()
seconds = time.perf_counter() - t0
tokens = sum(len(o) for o in out)
print(f"{'generation, bf16, batch 64':<34} {tokens / seconds:10,.0f} new tokens/s   peak "
      f"{torch.cuda.max_memory_allocated() / 2**20:8.0f} MiB")
EOF
echo "gpu_smoke: done ($OUT)"
