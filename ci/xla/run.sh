#!/usr/bin/env bash
# Run the XLA lane: accelerate_lite's PartialState and data ops on real torch_xla replicas (PJRT CPU).
#
# Needs the lane's own environment (ci/xla/setup.sh). Prints one line per check and replica, then
# "XLA lane summary: N passed, M failed"; exits non-zero when a check failed.
#
# Usage: ci/xla/run.sh [DEVICE_COUNT ...]      (default: 4 8)
# Environment: ACCELERATE_LITE_XLA_PYTHON  the lane's python (default: /work/xla-venv/bin/python)
#              XLA_LANE_TIMEOUT            seconds one world may run before it counts as hung (default 900)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${ACCELERATE_LITE_XLA_PYTHON:-${ACCELERATE_LITE_XLA_VENV:-/work/xla-venv}/bin/python}"
if [ ! -x "$PY" ]; then
    echo "no XLA lane python at $PY: create it with ci/xla/setup.sh (or set ACCELERATE_LITE_XLA_PYTHON)" >&2
    exit 2
fi
if [ "$#" -eq 0 ]; then
    set -- 4 8
fi
exec "$PY" -u "$HERE/xla_ops.py" --devices "$@"
