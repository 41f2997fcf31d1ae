#!/usr/bin/env bash
# The training path on a GPU, in one go (about 5-8 minutes on one GPU): which precision `auto` picks,
# `distilqa bench train` at fp16 and bf16 (samples/s and MFU against the datasheet peak), and a 1-GPU
# torchrun S2a killed after its first checkpoint and resumed (weights compared with an uninterrupted
# run and with the run-to-run floor). Nothing is downloaded: models are built locally.
#
#   scripts/gpu-rehearsal.sh [OUT_DIR]        (default gpu-rehearsal/)
#
# Needs distilqa installed with a CUDA build of torch (the training image, or .venv on a GPU node).
# On a machine without a GPU it runs the same steps at fp32 on the CPU, as a check of the script.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu-rehearsal}
mkdir -p "$OUT"
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 )}
BIN=$(dirname "$PY")
export PYTHONUNBUFFERED=1

echo "== device and the precision auto picks"
"$PY" - "$OUT/amp.json" <<'EOF'
import json, sys, torch
from distilqa.distill.precision import resolve_amp_here
from distilqa.distill.teacher_logits import logits_precision
if torch.cuda.is_available():
    info = {"device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
            "count": torch.cuda.device_count(), "train_auto": resolve_amp_here("auto", "cuda")}
else:
    info = {"device": "cpu", "train_auto": resolve_amp_here("auto", "cpu")}
info["teacher_logits_default"] = logits_precision("fp32", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
info["torch"] = torch.__version__
print(json.dumps(info, indent=2))
open(sys.argv[1], "w").write(json.dumps(info, indent=2) + "\n")
EOF

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    AMPS="fp16 bf16"; BATCH=32; STEPS=10; SHAPE="--layers 6 --hidden 768 --heads 12 --articles 6 --epochs 4"
else
    AMPS="fp32"; BATCH=2; STEPS=2; SHAPE="--layers 4 --hidden 64 --heads 4 --articles 2 --epochs 2 --amp fp32"
fi

echo "== distilqa bench train --amp $AMPS"
"$BIN/distilqa" bench train --stages s2a s2b logits --amp $AMPS --batch-size $BATCH --steps $STEPS \
    --output "$OUT/bench-train.json"

echo "== S2a under torchrun on 1 process: killed after its first checkpoint, resumed"
"$PY" scripts/rehearse_resume.py --work-dir "$OUT/resume-work" --stage intermediate --nproc 1 $SHAPE \
    --checkpoint-every 10 --output "$OUT/resume.json"
rm -rf "$OUT/resume-work"
echo "== done: $OUT/amp.json $OUT/bench-train.json $OUT/resume.json"
