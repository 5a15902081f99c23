#!/bin/bash
# Train the speech LM on a borrowed GPU machine (the device tool) in one call, within its limits:
# a 64 MB working tree, one command of at most 10 minutes, at most 8 files of 16 MB back.
#
# Prepare here (both folders are ignored through .git/info/exclude and sent with `carry`):
#   bash scripts/lm_gpu_train.sh pack [CORPUS [EXTRA_CORPUS...]]
#     .lm_train/corpus: the corpus manifest and its token cache (voice variants included), ~30 MB
#     .lm_train/extra/NAME: each extra corpus's train split (manifest, tokens): --extra-corpus .lm_train/extra/NAME
#     .lm_train/hearing.pt: the shipped speech LM's frozen hearing encoder (--hearing-encoder .lm_train/hearing.pt)
#     .lm_train/tokenizer: SmolLM2's tokenizer files
#     all of it as one .lm_train/pack.tar.xz, unpacked where it runs
#     .whl/: wheels the device image lacks or has in another version (soundfile and its needs, encodec,
#       websockets, transformers)
# The tracked tree travels too (64 MiB in all): `hide` takes models/speechlm and models/turn out of the
# index for the call (nothing on disk changes) and `unhide` puts them back; the training needs neither.
# Dry run here first:  DEVICE=cpu bash scripts/lm_gpu_train.sh 1 --preset tiny
# Run there (device `run`, carry [".lm_train", ".whl"]):
#   bash scripts/lm_gpu_train.sh MINUTES [EXTRA `voice train lm` ARGS...]
#   bash scripts/lm_gpu_train.sh parallel MINUTES NAME "ARGS" [NAME "ARGS"...]   # runs side by side on one GPU
# Back here: $OUT/ckpt.tar.00, .01, ... (the checkpoint in float16, cut under 16 MB) and train.log
#   (parallel: $OUT/NAME.tar.NN and NAME.log);
#   mkdir -p runs/lm/gpu && cat <files_at>/ckpt.tar.* | tar x -C runs/lm/gpu   # -> runs/lm/gpu/ckpt
#   voice eval lm runs/lm/gpu/ckpt
set -u
HIDDEN="models/speechlm models/turn"
if [ "${1:-}" = hide ]; then
  git rm -r -q --cached $HIDDEN && for d in $HIDDEN; do echo "/$d/" >> .git/info/exclude; done
  exit 0
fi
if [ "${1:-}" = unhide ]; then
  for d in $HIDDEN; do grep -vx "/$d/" .git/info/exclude > .git/info/exclude.tmp; mv .git/info/exclude.tmp .git/info/exclude; done
  git reset -q -- $HIDDEN && git status --short -- $HIDDEN
  exit 0
fi
if [ "${1:-}" = pack ]; then
  set -e
  CORPUS=${2:-data/corpus/v2}
  grep -qx '/.lm_train/' .git/info/exclude 2>/dev/null || echo /.lm_train/ >> .git/info/exclude
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  STAGE=$(mktemp -d /tmp/lm_train.XXXX)
  mkdir -p "$STAGE/corpus"
  cp "$CORPUS/manifest.jsonl" "$STAGE/corpus/"
  cp -r "$CORPUS/tokens" "$STAGE/corpus/"
  if [ -d "$CORPUS/align" ]; then cp -r "$CORPUS/align" "$STAGE/corpus/"; fi   # word timings (--text-align words)
  for extra in "${@:3}"; do
    name=$(basename "$extra"); mkdir -p "$STAGE/extra/$name"
    cp "$extra/manifest.jsonl" "$STAGE/extra/$name/" && cp -r "$extra/tokens" "$STAGE/extra/$name/"
  done
  .venv/bin/python -c "from voice.speechlm.cli import load_tokenizer; load_tokenizer('smollm2').save_pretrained('$STAGE/tokenizer')"
  .venv/bin/python -c "from pathlib import Path; from voice.speechlm.hearing import HearingEncoder as H
H.from_speech_lm(Path('models/speechlm')).half().save(Path('$STAGE/hearing.pt'))"
  # codes are 10-bit values in int16 files, manifests are JSON: xz brings ~56 MB to ~30 MB
  rm -rf .lm_train && mkdir .lm_train
  tar -C "$STAGE" -cf - . | xz -T2 -6 > .lm_train/pack.tar.xz
  rm -rf "$STAGE"
  mkdir -p .whl
  # encodec (the codec's modules) has no wheel on the registry: built here from its source
  .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl encodec==0.1.1
  # websockets: `voice` imports it to list its commands; transformers: the version the model is tested with
  for w in soundfile==0.13.1 cffi==2.0.0 pycparser==2.23 websockets==17.4 transformers==5.24.0; do
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
if [ -f .lm_train/pack.tar.xz ] && [ ! -d .lm_train/corpus ]; then xz -dc -T0 .lm_train/pack.tar.xz | tar -C .lm_train -xf - || exit 1; fi
command -v nvidia-smi >/dev/null && nvidia-smi -L
VARIANTS=$(ls .lm_train/corpus/tokens/*/variants.jsonl >/dev/null 2>&1 && echo --user-variants)
set -o pipefail
train_one() {   # NAME PARTS LOG ARGS...: train runs/lm/NAME, then its checkpoint in float16 (optimizer state
  # left behind), cut into parts that come back: $OUT/PARTS.tar.NN
  local name=$1 parts=$2 log=$3; shift 3
  $PY -m voice.cli train lm --corpus .lm_train/corpus --tokenizer .lm_train/tokenizer --out "runs/lm/$name" \
      --preset gpu --device "$DEV" --minutes "$MIN" $VARIANTS "$@" 2>&1 | tr '\r' '\n' \
      | grep --line-buffered -v -E "^train lm: .*it/s" > "$log"
  $PY -m voice.cli lm export "runs/lm/$name/checkpoint" --out "$OUT/$parts" --split-mb 15 >> "$log" 2>&1 \
      && rm -rf "${OUT:?}/$parts"
}
if [ "$MIN" = parallel ]; then
  MIN=$1; shift
  while [ $# -ge 2 ]; do
    name=$1; args=$2; shift 2
    echo "[gpu] $name: $args"
    # shellcheck disable=SC2086
    train_one "$name" "$name" "$OUT/$name.log" $args &
  done
  wait
  tail -n 4 "$OUT"/*.log
else
  train_one gpu ckpt "$OUT/train.log" "$@"
  tail -n 20 "$OUT/train.log"
fi
ls -la "$OUT"
