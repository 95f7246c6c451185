#!/usr/bin/env bash
# The benchmark on a CUDA machine: cases 1-8 (8 = ResNet-20 on 32x32x3 inputs), the packed search,
# the torchrun and wrapper overheads (about 5 minutes), then nanoGPT's GPU recipe (at most 6), offline. Writes case<N>_<name>.json, table.md, search_bench.json and
# search_table.md into OUT_DIR and prints the tables.
#
#   bench/gpu.sh [OUT_DIR] [extra bench/run.py flags]      # OUT_DIR default: $OUT, else bench/results/gpu
#
# Needs only a python3 with a CUDA torch. Everything else travels with the code:
#   - Python packages the machine lacks (pydantic, ...) as wheels in .whl/ at the repository root;
#     they are installed into /tmp/site, nothing is fetched;
#   - Fashion-MNIST (the four *-ubyte.gz files) in one of: $TRAINLAB_DATA/fashion-mnist,
#     data/fashion-mnist (repository root), ~/.cache/trainlab/fashion-mnist,
#     /usr/share/datasets/fashion-mnist. Case 8's 32x32x3 set is made from it (see bench/README.md).
# Exit codes: 0 done; 2 no CUDA or a package missing; 3 data missing.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${1:-${OUT:-bench/results/gpu}}
shift || true
start=$(date +%s)

# 1. Packages: carried wheels first, then check every import the bench needs.
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
missing=$("$PY" - <<'EOF'
import importlib
need = {"torch": "torch", "numpy": "numpy", "sklearn": "scikit-learn", "yaml": "pyyaml", "pydantic": "pydantic"}
print(" ".join(dist for mod, dist in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "gpu.sh: missing Python packages: $missing. Put their wheels (and their dependencies') in .whl/" >&2
  echo "        at the repository root; nothing can be downloaded on this machine." >&2
  exit 2
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu.sh: torch $("$PY" -c 'import torch; print(torch.__version__)') sees no CUDA device." >&2
  exit 2
fi

# 2. Data: the first root holding fashion-mnist/ is the one trainlab will use; check it is whole.
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
found=""
for root in ${TRAINLAB_DATA:-} "$PWD/data" "$HOME/.cache/trainlab" /usr/share/datasets /usr/local/share/datasets; do
  if [ -d "$root/fashion-mnist" ]; then found="$root"; break; fi
done
if [ -z "$found" ]; then
  echo "gpu.sh: Fashion-MNIST not found. Looked for fashion-mnist/ in: ${TRAINLAB_DATA:-(no \$TRAINLAB_DATA)}," >&2
  echo "        $PWD/data, $HOME/.cache/trainlab, /usr/share/datasets, /usr/local/share/datasets." >&2
  echo "        Bring it along: mkdir -p data && cp -r /usr/share/datasets/fashion-mnist data/ (30 MB)." >&2
  exit 3
fi
for f in $files; do
  if [ ! -s "$found/fashion-mnist/$f" ]; then
    echo "gpu.sh: $found/fashion-mnist/$f is missing or empty; the folder needs: $files" >&2
    exit 3
  fi
done
export TRAINLAB_DATA="$found"

# 3. The bench: fewer epochs and repeats than on the CPU so that all of it fits in 5 minutes.
mkdir -p "$OUT_DIR"
echo "gpu.sh: data from $found/fashion-mnist, results to $OUT_DIR" >&2
PYTHONUNBUFFERED=1 "$PY" bench/run.py --device cuda --cases 1,2,3,4,5,6,7,8 \
  --epochs 3 --timing-epochs 2 --repeats 2 --out "$OUT_DIR" "$@"

# 4. The packed search: the 16-point lr grid of the seed MLP, packed vs the same trials one after
#    another, each a `trainlab search` process (train.device=auto: the GPU). Needs optuna (and its
#    dependencies) as wheels in .whl/ where the machine lacks it.
if "$PY" -c 'import optuna' 2>/dev/null; then
  PYTHONUNBUFFERED=1 "$PY" bench/search_bench.py --grids 16 --contenders packed,sequential --out "$OUT_DIR"
else
  echo "gpu.sh: packed search skipped: optuna is not importable. Carry its wheels in .whl/ (optuna, alembic," >&2
  echo "        sqlalchemy, colorlog, tqdm, Mako, greenlet: pip download optuna -d .whl)." >&2
fi
# 5. Several processes: the plain run against torchrun (--nproc 1, and --nproc 2 where 2 GPUs are lent),
#    then what the wrappers cost per step at one GPU: DDP on the seed MLP, FSDP (fully_shard) on the
#    GPT of examples/shakespeare_gpu.yaml, each against the plain step.
PYTHONUNBUFFERED=1 "$PY" bench/ddp_bench.py --gpu --repeats 2 --out "$OUT_DIR"
PYTHONUNBUFFERED=1 "$PY" bench/wrapper_bench.py --device cuda --steps 20 --rounds 3 --out "$OUT_DIR"
# 6. nanoGPT's GPU recipe (examples/shakespeare_gpu.yaml: 5,000 steps, bf16, torch.compile), then
#    text from it with tokens/s. Last, and capped at 6 minutes, so the figures above survive a slow GPU.
timeout 360 env PYTHONUNBUFFERED=1 "$PY" -m trainlab train -c examples/shakespeare_gpu.yaml train.progress=lines \
  --out "$OUT_DIR/shakespeare_gpu" --json > "$OUT_DIR/shakespeare_gpu.json" || echo "gpu.sh: shakespeare_gpu stopped: exit $?" >&2
if [ -f "$OUT_DIR/shakespeare_gpu/summary.json" ]; then
  "$PY" -m trainlab generate "$OUT_DIR/shakespeare_gpu" --prompt "ROMEO:" --tokens 500 --json > "$OUT_DIR/shakespeare_gpu_sample.json"
fi
echo "gpu.sh: done in $(( $(date +%s) - start )) s" >&2
