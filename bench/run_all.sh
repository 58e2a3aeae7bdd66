#!/usr/bin/env bash
# Regenerate every figure of "Performance (issue 10)" in docs/benchmarks.md, in one command.
#
#     bench/run_all.sh                         # about 25 minutes on 2 idle cores
#     PEER_PYTHON=none bench/run_all.sh        # without Pyro / NumPyro
#     DEVICE_NOTE="quiet machine" bench/run_all.sh
#
# Run it on a quiet machine (load average near 0): on 2 cores another process makes torch's
# threads wait on each other and every figure moves by 2-10x. Writes bench/results/perf/*.
# PYTHON: the project's interpreter (default .venv/bin/python); PEER_PYTHON: the bench env's
# (bench/README.md; default /tmp/benchenv/bin/python); EPOCHS: of the trained model whose
# bf16 log p(x) is checked against fp32 (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PEER=${PEER_PYTHON:-/tmp/benchenv/bin/python}
OUT=bench/results/perf
DATA=${DATA_DIR:-../shared/data/binarized_mnist}
RUN=${RUN_DIR:-/tmp/elbox-perf-run}  # the trained model: outside the repository
mkdir -p "$OUT"
peers=()
if [ "$PEER" != none ] && "$PEER" -c "import pyro, numpyro" 2>/dev/null; then peers=(--peer-python "$PEER"); fi

{ uptime; "$PY" -c "import torch; print('torch', torch.__version__, torch.get_num_threads(), 'threads')"; } | tee "$OUT/machine.txt"
"$PY" bench/gemm_floor.py | tee "$OUT/gemm_floor.txt"
"$PY" bench/train_throughput.py --exactness --steps 100 | tee "$OUT/train_exactness.txt"
"$PY" bench/train_throughput.py --rounds 8 --steps 200 "${peers[@]}" --json "$OUT/train_throughput.json" \
    | tee "$OUT/train_throughput.txt"
"$PY" bench/train_throughput.py --profile --steps 100 | tee "$OUT/train_profile.txt"
"$PY" -m elbox train --data binarized-mnist --data-dir "$DATA" --latent-dim 50 --hidden 200,200 \
    --likelihood bernoulli --epochs "${EPOCHS:-10}" --compile --out "$RUN" --overwrite --no-report \
    --no-progress | tail -3
"$PY" bench/eval_throughput.py --points 200 --rounds 3 --run "$RUN" --json "$OUT/eval_throughput.json" \
    | tee "$OUT/eval_throughput.txt"
(cd bench && "$PY" eval_full.py --run "$RUN" --json "../$OUT/eval_full.json") | tee "$OUT/eval_full.txt"  # ~8 min
grep -h '^RESULT\|^PROFILE' "$OUT"/*.txt | tee "$OUT/summary.txt"
