#!/usr/bin/env bash
# accelerate_lite's data ops on 2 GPUs with NCCL (one process per GPU, tensors on cuda), then the
# ops benchmark (lite vs raw torch.distributed vs upstream accelerate where installed).
#
# Run from the repository root on a machine with >= 2 GPUs:
#     ci/gpu/nccl_ops.sh                 # checks + benchmark
#     ci/gpu/nccl_ops.sh --no-bench      # checks only
# Environment: PYTHON (default python), NPROC (default 2), OPS_EXAMPLES (default 40),
#              NCCL_OPS_TIMEOUT seconds per step (default 900).
# Prints "PASS/FAIL <check>" lines and "NCCL ops summary: N passed, M failed"; exits non-zero on a failure.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY="${PYTHON:-python}"
NPROC="${NPROC:-2}"
LIMIT="${NCCL_OPS_TIMEOUT:-900}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NCCL_NVLS_ENABLE=0   # no NVLink multicast on these machines
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

run_torchrun() {
    timeout "$LIMIT" "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" "$@"
}

echo "== NCCL data-op checks ($NPROC GPUs)"
run_torchrun ci/gpu/nccl_ops.py --examples "${OPS_EXAMPLES:-40}"
status=$?
if [ "$status" -eq 124 ]; then
    echo "NCCL ops: FAIL (timed out after ${LIMIT}s: a collective hung)"
fi

if [ "${1:-}" != "--no-bench" ]; then
    echo
    echo "== bench/ops.py --backend nccl"
    run_torchrun bench/ops.py --backend nccl || echo "bench/ops.py failed (exit $?)"
fi

if [ "$status" -eq 0 ]; then echo "NCCL ops: PASS"; else echo "NCCL ops: FAIL (exit $status)"; fi
exit "$status"
