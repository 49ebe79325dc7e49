#!/usr/bin/env bash
# The GPU check (benchmarks/RESULTS.md, "GPU"): install what it needs, then run each stage of
# benchmarks/gpu_check.py (floor, train, time_to_f1, pick, correct) in its own process under
# its own time limit. Writes into OUT_DIR: <stage>.json and <stage>.log per stage,
# stages.tsv (stage, exit status, seconds, limit), gpu.csv (nvidia-smi, on a GPU), cpu.txt (lscpu),
# and summary.json (benchmarks/gpu_summary.py). A stage that fails or runs out of time is
# recorded and the later stages still run; the exit status is 0 only if every stage passed.
#
# Usage: benchmarks/gpu_check.sh OUT_DIR [--device cuda|cuda:N|cpu] [--tiny]
#        benchmarks/gpu_check.sh --fetch-wheels DIR
#   --device cpu  no install: runs with $SASI_GPU_PYTHON (default .venv/bin/python)
#   --tiny        every stage on tiny sizes; '--device cpu --tiny' is the dry run
#   --fetch-wheels DIR  download here the wheels of the packages below for a GPU machine
#                 that reaches no registry (CPython $SASI_GPU_PYTHON_VERSION, default 3.12,
#                 manylinux x86_64); give that folder there as SASI_GPU_WHEELS
# Environment:
#   SASI_GPU_BUDGET_S      seconds for all stages together (default 480)
#   SASI_GPU_LIMIT_<STAGE> one stage's seconds (INSTALL 60, FLOOR 30, TRAIN 60,
#                          TIME_TO_F1 90, PICK 180, CORRECT 60), cut to what the budget has left;
#                          INSTALL 60 is for a torch already there: downloading one takes minutes
#   SASI_GPU_VENV          virtual environment to create or reuse (default /tmp/sasi-gpu-venv),
#                          on top of the packages of SASI_GPU_BASE_PYTHON (default python3),
#                          so that a CUDA torch already there is used
#   SASI_TORCH_INDEX       pip index to install torch from when none runs on the GPU
#                          (default: pip's own, PyPI, whose Linux torch is a CUDA build)
#   SASI_GPU_WHEELS        folder of wheels to install from instead of a registry
#   SASI_GPU_WORK          folder for the demo data and models (default: a temporary one)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
# The engine's and the bench extra's packages besides numpy and torch (setup.py); the
# plugin's Scipion packages are not needed to run the engine.
PACKAGES="mrcfile connected-components-3d monai"
declare -A LIMITS=([install]=60 [floor]=30 [train]=60 [time_to_f1]=90 [pick]=180 [correct]=60)
STAGE_MARGIN=10  # seconds of a stage's limit kept for its start-up and its last write

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

cuda_torch_ok() {  # $1: python, $2: the driver's CUDA version. Torch runs on the GPU?
  "$1" - "$2" <<'EOF'
import sys

import torch

built, driver = torch.version.cuda, sys.argv[1]
print(f"torch {torch.__version__}, built for CUDA {built}; the driver serves CUDA {driver}")
assert built and torch.cuda.is_available(), "this torch has no usable CUDA"
assert not driver or int(built.split(".")[0]) <= int(driver.split(".")[0]), \
    "this torch needs a newer driver"
print(torch.cuda.get_device_name(0), "answers:", (torch.ones(1, device="cuda") + 1).item())
EOF
}

make_venv() {  # $1: the virtual environment, on top of the base python's packages
  local base=${SASI_GPU_BASE_PYTHON:-python3}
  # --without-pip and a .pth file rather than --system-site-packages: the base python can
  # be a virtual environment itself (whose packages --system-site-packages would miss)
  # and need not have ensurepip; pip comes from the base's packages.
  "$base" -m venv --without-pip "$1"
  "$base" -c 'import site; print("\n".join(site.getsitepackages()))' \
    > "$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/base.pth"
}

install_env() {  # $1: the virtual environment
  local venv=$1 py driver offline=()
  driver=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n 1)
  echo "the driver serves CUDA ${driver:-?}"
  if [ -n "${SASI_GPU_WHEELS:-}" ]; then offline=(--no-index --find-links "$SASI_GPU_WHEELS"); fi
  [ -x "$venv/bin/python" ] || make_venv "$venv"
  py=$venv/bin/python
  if ! cuda_torch_ok "$py" "$driver"; then
    echo "installing torch with pip${SASI_TORCH_INDEX:+ from $SASI_TORCH_INDEX}"
    if ! "$py" -m pip install "${offline[@]}" ${SASI_TORCH_INDEX:+--index-url "$SASI_TORCH_INDEX"} \
         torch || ! cuda_torch_ok "$py" "$driver"; then
      echo "error: no torch here runs on this GPU, and pip could not install one. Give a" \
           "python whose torch does (SASI_GPU_BASE_PYTHON), or a pip index with torch" \
           "built for CUDA ${driver:-of the driver} or older (SASI_TORCH_INDEX, the" \
           "cu${driver//./} wheels), or a folder of wheels (SASI_GPU_WHEELS)" >&2
      return 1
    fi
  fi
  "$py" -c 'import numpy, torch; print(f"torch=={torch.__version__}\nnumpy=={numpy.__version__}")' \
    > "$venv/constraints.txt"  # keep the torch and numpy found or installed above
  "$py" -m pip install --no-deps --no-build-isolation -e "$REPO"
  "$py" -m pip install "${offline[@]}" -c "$venv/constraints.txt" $PACKAGES
}

fetch_wheels() {  # $1: the folder
  "${SASI_GPU_PYTHON:-$REPO/.venv/bin/python}" -m pip download --no-deps --only-binary=:all: \
    --implementation cp --python-version "${SASI_GPU_PYTHON_VERSION:-3.12}" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$1" $PACKAGES
}

run_stage() {  # $1: the stage
  local stage=$1 limit var start rc
  var=SASI_GPU_LIMIT_${stage^^}
  limit=${!var:-${LIMITS[$stage]}}
  if (( limit > BUDGET - (SECONDS - BEGIN) )); then limit=$(( BUDGET - (SECONDS - BEGIN) )); fi
  if [ "$stage" = install ]; then
    set -- bash "$HERE/gpu_check.sh" --install "$VENV"
  else
    set -- "$PY" "$HERE/gpu_check.py" "$stage" "$OUT" --device "$DEVICE" --work "$WORK" \
      --seconds $(( limit - STAGE_MARGIN )) ${TINY:+--tiny}
  fi
  start=$SECONDS
  if (( limit <= STAGE_MARGIN )); then
    echo "not run: ${limit} s left of the ${BUDGET} s budget" > "$OUT/$stage.log"
    rc=124
  else
    rc=0
    PYTHONUNBUFFERED=1 timeout --kill-after=10 "$limit" "$@" > "$OUT/$stage.log" 2>&1 || rc=$?
  fi
  printf '%s\t%s\t%s\t%s\n' "$stage" "$rc" $(( SECONDS - start )) "$limit" >> "$OUT/stages.tsv"
  echo "stage $stage: exit status $rc after $(( SECONDS - start )) s (limit $limit s)"
  if (( rc != 0 )); then
    tail -n 5 "$OUT/$stage.log" | sed 's/^/    /'
    FAILED=1
  fi
}

OUT="" DEVICE=cuda TINY=""
while (( $# )); do
  case $1 in
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --install) install_env "$2"; exit ;;
    --fetch-wheels) fetch_wheels "$2"; exit ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || { usage >&2; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/stages.tsv"
BUDGET=${SASI_GPU_BUDGET_S:-480} BEGIN=$SECONDS FAILED=0
WORK=${SASI_GPU_WORK:-}
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d /tmp/sasi-gpu-check-XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi
lscpu > "$OUT/cpu.txt" 2>&1 || true
if [ "$DEVICE" = cpu ]; then
  PY=${SASI_GPU_PYTHON:-$REPO/.venv/bin/python}
else
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1 \
    || echo "nvidia-smi failed: see $OUT/gpu.csv"
  VENV=${SASI_GPU_VENV:-/tmp/sasi-gpu-venv}
  PY=$VENV/bin/python
  run_stage install
fi
for stage in floor train time_to_f1 pick correct; do
  run_stage "$stage"
done
[ -x "$PY" ] || PY=python3
"$PY" "$HERE/gpu_summary.py" "$OUT" || FAILED=1
exit "$FAILED"
