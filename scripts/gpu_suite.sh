#!/usr/bin/env bash
# Prepares and prints the accelerator suites' commands (docs/gpu_suite.md).
#
#   scripts/gpu_suite.sh prepare          here, with network: the wheels the suites import that
#                                         the GPU image lacks, and the reference curves, into
#                                         .gpu_suite/ (ignored by git); checks that the working
#                                         tree plus .gpu_suite/ fit in 64 MiB
#   scripts/gpu_suite.sh size             only the size check
#   scripts/gpu_suite.sh deps             checks, from the distributions installed here, that
#                                         every requirement of the carried wheels is carried,
#                                         in the image, or listed in NOT_CARRIED; $PYTHON
#                                         (default python3) runs it
#   scripts/gpu_suite.sh command SUITE    prints the one command to run on the GPU machine
#                                         (SUITE: dreamer, muzero or craftax), carrying
#                                         .gpu_suite
#
# The GPU image has jax 0.11.2 with CUDA, flax, optax, chex, orbax-checkpoint, matplotlib,
# rich, six and numpy; what else the suites import travels as wheels for CPython 3.12 on
# x86-64 Linux, installed there with `pip install --no-index --no-deps`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR=".gpu_suite"
LIMIT=$((64 * 1024 * 1024))
# Pinned as in setup.cfg; the rest are their imported dependencies missing from the image
# (warp-lang, 390 MB installed, is left out: mujoco.mjx imports it only if present, and the
# dmc adapter uses MJX's JAX implementation; so is pygame, which craftax needs only for its
# interactive game, not for the environment).
WHEELS=(
  brax==0.14.2 playground==0.2.0 mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0
  mujoco-mjx==3.17.0 glfw==2.11.0 trimesh==5.2.0 jaxopt==0.8.5 ml-collections==1.1.0
  mctx==0.0.71 gymnax==1.0.1 gymnasium==1.3.0 farama-notifications==0.0.6
  flashbax==0.1.3 tensorboardX==2.6.5 tyro==1.0.17 docstring-parser==0.18.0
  craftax==1.6.1 imageio==2.38.2 typeguard==4.6.1 typing-extensions==4.16.0
)
# typing-extensions is in the image at a version not recorded; typeguard needs >= 4.14, so the
# carried wheel (put first on PYTHONPATH) replaces it.
# Declared by the wheels above but not imported on the suites' paths, so not carried (checked
# by `deps`): brax's flask and flask-cors serve its web viewer, playground's mediapy writes
# videos, mujoco's pyopengl and mujoco-studio's websockets serve its viewers, warp-lang and
# pygame as above.
NOT_CARRIED=(flask flask-cors mediapy warp-lang pyopengl websockets pygame)
# The GPU image's Python packages (its package list as read on 2026-11-17).
IMAGE=(
  absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
  botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
  coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
  diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
  frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
  hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
  jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
  lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
  mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
  ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
  nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
  nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
  nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
  opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
  pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf
  psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
  pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
  pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
  scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
  shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
  tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
  torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
  treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug
  wheel wrapt xarray xxhash yarl zipp
)
REFERENCE="dmc_proprio-dreamerv3.json.gz"

tree_bytes() {
  # What a device run sends: tracked files and untracked files git does not ignore.
  (cd "$ROOT" && { git ls-files -z; git ls-files -z -o --exclude-standard; } |
    xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
}

size_check() {
  local tree carried total
  tree=$(tree_bytes)
  carried=$(du -sb "$ROOT/$DIR" 2>/dev/null | cut -f1 || echo 0)
  total=$((tree + ${carried:-0}))
  printf 'working tree %.1f MiB + %s %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
    "$(echo "$tree / 1048576" | bc -l)" "$DIR" "$(echo "${carried:-0} / 1048576" | bc -l)" \
    "$(echo "$total / 1048576" | bc -l)"
  if [ "$total" -gt "$LIMIT" ]; then
    echo "error: over 64 MiB; drop wheels the suites do not import or untracked files" >&2
    exit 1
  fi
}

prepare() {
  cd "$ROOT"
  rm -rf "$DIR/wheels"
  mkdir -p "$DIR/wheels" "$DIR/reference_scores"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DIR/wheels" "${WHEELS[@]}"
  local ref="$ROOT/../shared/reference_scores/$REFERENCE"
  if [ -f "$ref" ]; then
    cp "$ref" "$DIR/reference_scores/"
  else
    echo "warning: $ref not found; the dreamer suite will run without the reference curve" >&2
  fi
  ls -1 "$DIR/wheels" | sed 's/^/  /'
  deps_check
  size_check
}

deps_check() {
  (cd "$ROOT" && "${PYTHON:-python3}" -m experiments.wheel_deps --image "${IMAGE[*]} ${NOT_CARRIED[*]}" \
    "${WHEELS[@]}") && echo "requirements of the carried wheels: all carried or in the image"
}

command_for() {
  local suite="$1"
  case "$suite" in dreamer|muzero|craftax) ;; *)
    echo "error: unknown suite '$suite'; choose dreamer, muzero or craftax" >&2; exit 2;; esac
  # Run with carry [".gpu_suite"] and timeout_s 600: the suite's budget is 540 s, the wheels
  # install in about 20 s.
  cat <<EOF
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $DIR/wheels/*.whl && export PYTHONPATH=/tmp/site || exit; export PYTHONUNBUFFERED=1; set -o pipefail; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -m experiments.gpu_suite $suite --out \$OUT 2>&1 | tee \$OUT/$suite.log
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  size) size_check ;;
  deps) deps_check ;;
  command) command_for "${2:-}" ;;
  *) echo "usage: scripts/gpu_suite.sh {prepare | size | deps | command dreamer|muzero|craftax}" >&2
     exit 2 ;;
esac
