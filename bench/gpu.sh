#!/usr/bin/env bash
# GPU benchmarks in one go (at most 6 minutes: each part is cut off at 3): embedder throughput, then Phi-3
# Vision rerank latency. Results go to $OUT (default bench/results/gpu). Packages the
# machine lacks are installed from the wheels in .whl/ (see bench/gpu_wheels.txt).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-$(command -v /opt/torch/.venv/bin/python3 || command -v python3)}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export OUT
if [ -d .whl ]; then
  missing=$("$PY" - <<'PYEOF'
import glob, importlib.metadata as md, os
for whl in sorted(glob.glob(".whl/*.whl")):
    name = os.path.basename(whl).split("-")[0]
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(whl)
PYEOF
)
  if [ -n "$missing" ]; then
    echo "installing: $missing"
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site $missing 2>&1 | tail -3
  fi
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export TOKENIZERS_PARALLELISM=false
"$PY" -c "import torch, transformers, timm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv >> "$OUT/versions.txt" 2>&1
cd bench
timeout ${EMBED_TIMEOUT:-180} "$PY" gpu.py --part embed "$@" 2>&1 | grep -v Warning | tee "$OUT/embed.log"
timeout ${RERANK_TIMEOUT:-180} "$PY" gpu.py --part rerank "$@" 2>&1 | grep -v Warning | tee "$OUT/rerank.log"
ls -l "$OUT"
