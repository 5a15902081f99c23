#!/usr/bin/env bash
# Sets up a fresh machine for Voice: Debian packages, the virtual environment from the lock,
# the package, the offline model bundles, then an import check. Idempotent: run again, it
# skips what is done. Each step logs how long it took.
#   scripts/setup.sh            set up only
#   scripts/setup.sh serve ...  set up, then `voice serve ...`
#   scripts/setup.sh test ...   set up, then run the test suite (pytest args may follow)
# Environment: VOICE_VENV (default .venv), PYTHON (default python3.11, else python3),
#   VOICE_CACHE (default ~/.cache/voice: the built llama.cpp wheel and model conversions),
#   VOICE_SKIP_APT=1 (do not install Debian packages), VOICE_NO_LLAMACPP=1 (skip llama.cpp).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
VENV=${VOICE_VENV:-$root/.venv}
CACHE=${VOICE_CACHE:-$HOME/.cache/voice}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif command -v python3.11 >/dev/null; then PY=python3.11
else PY=python3; fi

log() { echo "[setup] $*" >&2; }
step_start=$SECONDS
step_done() { log "$1 done in $((SECONDS - step_start)) s"; step_start=$SECONDS; }
# pip in the venv, without the warnings some machines' pip configuration prints for every package.
pip_() {
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# 1. Debian packages: PortAudio for sounddevice, offline TTS voices, Chromium for browser tests,
#    cmake and a compiler for the llama.cpp backend.
apt_pkgs=(libportaudio2 libsndfile1 espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox chromium
          cmake g++)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ "${VOICE_SKIP_APT:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    step_done "Debian packages"
  else
    log "WARNING: missing Debian packages (${missing[*]}); install them with apt-get as root"
  fi
fi

# 2. Virtual environment, every dependency from the lock (exact versions, hashes checked), then
#    the package itself. Re-done only when the lock, pyproject.toml or this script change.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
lock_py=3.11   # the Python that scripts/lock.sh resolves for
venv_py=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$venv_py" != "$lock_py" ]; then
  log "WARNING: requirements.lock was made for Python $lock_py, the environment runs $venv_py;"
  log "         if the install fails, set PYTHON=python$lock_py or refresh the lock (bash scripts/lock.sh)"
fi
stamp="$VENV/.voice-installed"
want=$(cat pyproject.toml requirements.lock requirements-nodeps.lock scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # llama-cpp-python is a source build: it goes through the wheel cache below, not pip install.
  awk '/^[A-Za-z]/ { skip = ($0 ~ /^llama-cpp-python==/) } !skip' requirements.lock > "$tmp/main.txt"
  awk '/^[A-Za-z]/ { keep = ($0 ~ /^llama-cpp-python==/) } keep' requirements.lock > "$tmp/llama.txt"
  log "installing the locked dependencies (first time: a few minutes, mostly torch)"
  # torch and its CUDA libraries: about 6 GB installed, 10 GB at the peak (the wheels are downloaded first)
  free_kb=$(df -Pk "$VENV" | awk 'NR == 2 { print $4 }')
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((10 * 1024 * 1024)) ]; then
    log "WARNING: $((free_kb / 1024 / 1024)) GB free under $VENV; the first install needs about 10 GB"
    log "         (6 GB stay): if pip stops with 'No space left on device', free some and run this again"
  fi
  pip_ install -q --require-hashes --no-deps -r "$tmp/main.txt"
  # SmolLM2 bundle: its declared dependencies pull a llama.cpp build and a CLI we do not need.
  pip_ install -q --require-hashes --no-deps -r requirements-nodeps.lock
  step_done "locked dependencies"

  if [ "${VOICE_NO_LLAMACPP:-0}" != 1 ] && [ -s "$tmp/llama.txt" ]; then
    # Only the library the cascade loads: no multimodal (mtmd/llava) tools, examples, tests or server.
    # On x86-64 a fixed AVX2 target instead of -march=native: native builds on Xeons with AMX take
    # ggml's AMX matmul, which crashed (SIGSEGV in ggml_backend_amx_mul_mat) on these machines.
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF"
    CMAKE_ARGS="$CMAKE_ARGS -DLLAMA_BUILD_SERVER=OFF"
    if [ "$(uname -m)" = x86_64 ]; then
      CMAKE_ARGS="$CMAKE_ARGS -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    fi
    export CMAKE_ARGS
    export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
    cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null || uname -m)
    key=$(cat "$tmp/llama.txt" <(echo "$CMAKE_ARGS $cpu $venv_py") | sha256sum | cut -c1-16)
    wheels="$CACHE/wheels/llama-cpp-python-$key"
    if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
      log "building llama-cpp-python once for this machine (about 3 minutes on 2 cores; cached in $wheels)"
      mkdir -p "$wheels.part"
      pip_ wheel -q --no-cache-dir --require-hashes --no-deps -r "$tmp/llama.txt" -w "$wheels.part"
      rm -rf "$wheels" && mv "$wheels.part" "$wheels"
    else
      log "reusing the built llama-cpp-python wheel in $wheels"
    fi
    pip_ install -q --no-deps --force-reinstall "$wheels"/*.whl
    step_done "llama-cpp-python"
  fi

  pip_ install -q --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
  step_done "the voice package"
fi

# 3. Offline model bundles: check what ships in packages and models/, prepare caches (idempotent).
"$VENV/bin/voice" models prepare
step_done "model bundles"

# 4. Import check: every heavy dependency and bundle loads, or the set-up stops naming the one that does not.
skip_checks=""
[ "${VOICE_NO_LLAMACPP:-0}" = 1 ] && skip_checks=llama-cpp-python
"$VENV/bin/voice" models check --skip "$skip_checks"
step_done "import check"

# 5. What to do now that the machine is ready.
action=${1:-}
[ $# -gt 0 ] && shift
case "$action" in
  "") log "ready: activate with 'source $VENV/bin/activate'" ;;
  serve) exec "$VENV/bin/voice" serve "$@" ;;
  test)
    # A null ALSA device lets PortAudio open streams on machines without a sound card.
    export VOICE_TEST_ALSA_NULL=1
    exec "$VENV/bin/python" -m pytest "$@" ;;
  *) exec "$VENV/bin/voice" "$action" "$@" ;;
esac
