#!/usr/bin/env bash
# Idempotent environment bootstrap: virtualenv, pinned stack, mmcv 2.1.0 rebuilt for
# C++20 (cached outside the checkout), and our own compiled extension.
#   VENV=path            virtualenv location (default: <repo>/.venv)
#   INTERNIMAGE_CACHE    where the mmcv wheel is kept (default: ~/.cache/internimage)
#   FORCE_CUDA=1 / WITH_CUDA=0   force or skip the CUDA kernels of ops_dcnv3
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
CACHE="${INTERNIMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/internimage}"
PYTHON="${PYTHON:-python3}"
MMCV_VERSION=2.1.0
# Bump when the package-install steps below change: with requirements/*.txt it forms the
# stamp, so edits elsewhere in this script (the extension build) never reinstall the stack.
STACK_RECIPE=2
WHEELS="$CACHE/wheels"

log() { printf '[bootstrap %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

mkdir -p "$WHEELS"
exec 9>"$CACHE/bootstrap.lock"
flock 9  # two bootstraps on one machine wait for each other instead of racing

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

# The stamp hashes the inputs of the package step (the pins, the mmcv version and the recipe
# number above): change a pin and it reruns.
stamp_hash="$( (cat "$ROOT"/requirements/*.txt; echo "mmcv=$MMCV_VERSION recipe=$STACK_RECIPE") |
  sha256sum | cut -c1-16)"
stamp="$VENV/.internimage-stack-$stamp_hash"

if [ ! -f "$stamp" ]; then
  log "installing core requirements (torch first)"
  "${PIP[@]}" install -q -r "$ROOT/requirements/core.txt"

  mmcv_wheel="$(ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$mmcv_wheel" ]; then
    log "building mmcv $MMCV_VERSION for C++20 (one time, ~22 min on 2 cores)"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    "${PIP[@]}" download -q --no-deps --no-binary :all: -d "$work" "mmcv==$MMCV_VERSION"
    tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
    # torch >= 2.13 headers refuse anything older than C++20.
    sed -i 's/-std=c++17/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
    (cd "$work/mmcv-$MMCV_VERSION" &&
      env -u FORCE_CUDA MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" \
        "${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$work/dist" .)
    built="$(ls "$work"/dist/mmcv-*.whl)"
    cp "$built" "$WHEELS/.partial.whl"
    mv "$WHEELS/.partial.whl" "$WHEELS/$(basename "$built")"  # atomic: no half wheel
    mmcv_wheel="$WHEELS/$(basename "$built")"
    rm -rf "$work"; trap - EXIT
  fi
  log "installing the full stack with $(basename "$mmcv_wheel")"
  "${PIP[@]}" install -q -r "$ROOT/requirements/full.txt" "$mmcv_wheel"
  log "installing deepspeed (DS_BUILD_OPS=0)"
  DS_BUILD_OPS=0 "${PIP[@]}" install -q --no-build-isolation -r "$ROOT/requirements/deepspeed.txt"
  log "installing the --no-deps packages (requirements/nodeps.txt)"
  "${PIP[@]}" install -q --no-deps -r "$ROOT/requirements/nodeps.txt"
  rm -f "$VENV"/.internimage-stack-*
  touch "$stamp"
fi

# The repository itself is importable from the venv (ops_dcnv3, classification, ...), and
# so are the mmdet/mmseg plugins that configs name in custom_imports.
site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$ROOT" "$ROOT/detection" "$ROOT/segmentation" > "$site/internimage-repo.pth"

# setup.py finds the CUDA toolkit and the nvidia-wheel headers itself (stack.md). Nothing to
# do when the library is newer than every source, header and setup.py and the build settings
# (CUDA on/off, archs, torch) are those it was built with; otherwise ninja recompiles what
# changed, in a build folder of its own (pip install . uses build/temp.*).
build_temp="$ROOT/build/inplace"
torch_version="$("$PY" -c 'from importlib.metadata import version; print(version("torch"))')"
settings="torch=$torch_version WITH_CUDA=${WITH_CUDA:-} FORCE_CUDA=${FORCE_CUDA:-}"
settings="$settings TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-} CUDA_HOME=${CUDA_HOME:-}"
library="$(ls "$ROOT"/ops_dcnv3/_C*.so 2>/dev/null | head -n1 || true)"
same_settings=0
if [ "$(cat "$build_temp/settings" 2>/dev/null)" = "$settings" ]; then same_settings=1; fi
if [ -n "$library" ] && [ "$same_settings" = 1 ] &&
   [ -z "$(find "$ROOT/ops_dcnv3/csrc" "$ROOT/setup.py" -newer "$library" -print -quit)" ]; then
  log "ops_dcnv3 extension up to date ($(basename "$library"))"
else
  # ninja recompiles exactly the files whose source, headers or command line changed.
  log "building the ops_dcnv3 extension (incremental)"
  (cd "$ROOT" && MAX_JOBS="${MAX_JOBS:-2}" "$PY" setup.py -q build_ext --inplace --build-temp "$build_temp")
  mkdir -p "$build_temp" && printf '%s\n' "$settings" > "$build_temp/settings"
fi
log "environment ready: $VENV"
