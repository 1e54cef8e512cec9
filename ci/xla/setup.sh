#!/usr/bin/env bash
# Create the XLA lane's virtual environment (torch 2.9.0 + torch_xla 2.9.0, CPU PJRT).
#
# It lives OUTSIDE the repository and apart from the main environment (torch 2.13 CPU): torch_xla
# 2.9.0 needs torch 2.9.0, whose registry wheel is a CUDA build (~4 GB download, ~7 GB on disk,
# 3-7 minutes). Idempotent: an existing venv that already imports torch_xla 2.9.0 and
# accelerate_lite is left alone.
#
# Usage: ci/xla/setup.sh [VENV_DIR]     (default: $ACCELERATE_LITE_XLA_VENV or /work/xla-venv)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${1:-${ACCELERATE_LITE_XLA_VENV:-/work/xla-venv}}"
PY="$VENV/bin/python"
TORCH_VERSION="2.9.0"

check() {
    "$PY" - "$TORCH_VERSION" <<'PYEOF' 2>/dev/null
import importlib.metadata as md, sys
want = sys.argv[1]
assert md.version("torch").startswith(want), md.version("torch")
assert md.version("torch_xla").startswith(want), md.version("torch_xla")
import accelerate_lite  # noqa: F401  (installed editable from this checkout)
PYEOF
}

if [ -x "$PY" ] && check; then
    echo "xla venv ready: $PY"
    exit 0
fi

start=$(date +%s)
[ -x "$PY" ] || python3 -m venv "$VENV"
# The machine-wide pip constraints may cap torch; this venv pins its own versions, so it ignores them.
export PIP_CONSTRAINT=
export PIP_CONFIG_FILE=/dev/null
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet \
    "torch==$TORCH_VERSION" "torch_xla==$TORCH_VERSION" \
    numpy pytest hypothesis packaging psutil pyyaml safetensors rich tqdm
# The project itself, editable, without re-resolving its dependencies (torch is pinned above).
"$PY" -m pip install --quiet --no-deps -e "$REPO"
check || { echo "xla venv at $VENV is incomplete after install" >&2; exit 1; }
echo "xla venv ready: $PY (built in $(( $(date +%s) - start )) s)"
