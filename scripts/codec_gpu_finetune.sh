#!/bin/bash
# Continue training the compact codec on a borrowed GPU machine (the device tool), within its
# limits: a 64 MB working tree, one command of at most 10 minutes, files back under 16 MB each.
#
# Prepare here (both folders are listed in .git/info/exclude and sent with `carry`):
#   voice codec pack --corpus data/corpus/v2 --out .codec_train --format opus \
#       --assistant-minutes 28 --user-minutes 100            # ~34 MB of Ogg/Opus
#   .codec_init/run/: a weights-only run folder to resume from (float16 tensors incl. the
#       EMA codebook state), e.g. written by this script's last step on an earlier call
#   .whl/: soundfile, cffi, pycparser and encodec wheels (the device image lacks them)
# Run there:   bash scripts/codec_gpu_finetune.sh MINUTES [DEVICE] [EXTRA TRAIN ARGS...]
# Back here:   $OUT/run/{ckpt.json,ckpt-00.pt,log.jsonl}; then
#   voice codec export --run-dir <that folder> --out models/codec/compact_codec.pt
set -u
MIN=${1:-7}; DEV=${2:-cuda}; shift $(( $# < 2 ? $# : 2 ))
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${NOWHL:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
PY=${PY:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi -L
rm -rf runs/gpu-ft && mkdir -p runs/gpu-ft && cp .codec_init/run/* runs/gpu-ft/
$PY -m voice.codec.cli train codec --data .codec_train --run-dir runs/gpu-ft --steps 1000000 --batch-size 32 \
    --assistant-share 0.3 --device "$DEV" --minutes "$MIN" --save-every-s 120 --no-optimizer-state --no-progress \
    "$@" 2>&1 | tee "$OUT/train.log" | grep -v Warning
# float16 weights-only copy (EMA codebook state kept), small enough to come back
$PY - runs/gpu-ft "$OUT/run" <<'PYEOF'
import shutil
import sys
from pathlib import Path

from voice.codec.train import load_checkpoint, save_checkpoint

payload, tensors = load_checkpoint(Path(sys.argv[1]))
save_checkpoint(Path(sys.argv[2]), {k: v for k, v in payload.items() if k != "shards"},
                {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()})
shutil.copy(Path(sys.argv[1]) / "log.jsonl", Path(sys.argv[2]) / "log.jsonl")
print("step", payload["step"], "last", payload["last"])
PYEOF
