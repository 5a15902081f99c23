#!/bin/bash
# Train the speech LM on a borrowed GPU machine (the device tool) in one call, within its limits:
# a 64 MB working tree, one command of at most 10 minutes, at most 8 files of 16 MB back.
#
# Prepare here (both folders are ignored through .git/info/exclude and sent with `carry`):
#   bash scripts/lm_gpu_train.sh pack [CORPUS]
#     .lm_train/corpus: the corpus manifest and its token cache (voice variants included), ~30 MB
#     .lm_train/tokenizer: SmolLM2's tokenizer files
#     .whl/: wheels the device image lacks (soundfile and its needs)
# Dry run here first:  DEVICE=cpu bash scripts/lm_gpu_train.sh 1 --preset tiny
# Run there (device `run`, carry [".lm_train", ".whl"]):
#   bash scripts/lm_gpu_train.sh MINUTES [EXTRA `voice train lm` ARGS...]
# Back here: $OUT/ckpt.tar.00, .01, ... (the checkpoint in float16, cut under 16 MB) and train.log;
#   mkdir -p runs/lm/gpu && cat <files_at>/ckpt.tar.* | tar x -C runs/lm/gpu   # -> runs/lm/gpu/ckpt
#   voice eval lm runs/lm/gpu/ckpt
set -u
if [ "${1:-}" = pack ]; then
  set -e
  CORPUS=${2:-data/corpus/v2}
  grep -qx '/.lm_train/' .git/info/exclude 2>/dev/null || echo /.lm_train/ >> .git/info/exclude
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  rm -rf .lm_train && mkdir -p .lm_train/corpus
  cp "$CORPUS/manifest.jsonl" .lm_train/corpus/
  cp -r "$CORPUS/tokens" .lm_train/corpus/
  if [ -d "$CORPUS/align" ]; then cp -r "$CORPUS/align" .lm_train/corpus/; fi   # word timings (--text-align words)
  .venv/bin/python -c "from voice.speechlm.cli import load_tokenizer; load_tokenizer('smollm2').save_pretrained('.lm_train/tokenizer')"
  mkdir -p .whl
  for w in soundfile==0.13.1 cffi==2.0.0 pycparser==2.23; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl "$w"
  done
  du -sh .lm_train .whl
  exit 0
fi
MIN=${1:-8}; shift || true
DEV=${DEVICE:-cuda}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d .whl ] && [ "$DEV" != cpu ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi -L
RUN=${RUN:-runs/lm/gpu}
VARIANTS=$(ls .lm_train/corpus/tokens/*/variants.jsonl >/dev/null 2>&1 && echo --user-variants)
set -o pipefail
$PY -m voice.cli train lm --corpus .lm_train/corpus --tokenizer .lm_train/tokenizer --out "$RUN" --preset gpu \
    --device "$DEV" --minutes "$MIN" $VARIANTS "$@" 2>&1 | tr '\r' '\n' | grep -v -E "^train lm: .*it/s" \
    | tee "$OUT/train.log"
# the checkpoint in float16 (optimizer state left behind), cut into parts that come back
$PY -m voice.cli lm export "$RUN/checkpoint" --out "$OUT/ckpt" --split-mb 15 && rm -rf "$OUT/ckpt"
ls -la "$OUT"
