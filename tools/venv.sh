#!/usr/bin/env bash
# Make .venv match constraints.txt, building it from nothing when needed.
#
# The third-party stack (CUDA-build torch, about 5 GB) lives in a cache outside the clone, keyed by a
# hash of constraints.txt and the Python version, so that clones and CI runs on one machine share it:
#   ${CASSLE_VENV_CACHE:-~/.cache/cassle/venvs}/<key>/
# .venv itself is a small venv that sees the cached packages through a .pth file and holds the editable
# install of cassle plus the console scripts (snakemake, mlflow, cassle, ...). Set CASSLE_VENV_CACHE=off
# to install everything into .venv instead. Usage: tools/venv.sh [VENV_DIR]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$(realpath -m "${1:-$root/.venv}")  # absolute: it goes into the console scripts' #! lines
python=${PYTHON:-python3}
layout=2  # bump when the way this script builds environments changes

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "tools/venv.sh: $("$python" --version 2>&1) is too old; Snakemake 9 needs Python >= 3.11 (set PYTHON=...)" >&2
  exit 1
}
pyver=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
key=$( { cat "$root/constraints.txt"; echo "python=$pyver layout=$layout"; } | sha256sum | cut -c1-16)
stamp="$key $root"

if [[ -f "$venv/.cassle-stamp" && "$(cat "$venv/.cassle-stamp")" == "$stamp" && -x "$venv/bin/python" ]]; then
  exit 0
fi

log() { echo "[venv] $*" >&2; }
# pip is quiet; the filter drops the machine-wide find-links notices that say nothing about this install.
pip_install() {
  "$1/bin/python" -m pip install --disable-pip-version-check -q "${@:2}" 2> >(grep -v 'is ignored: it is neither' >&2)
}

site_of() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

install_project() {  # $1: venv that already sees every dependency
  pip_install "$1" --no-deps --no-build-isolation -e "$root"
  "$1/bin/python" -m pip check >/dev/null || {
    "$1/bin/python" -m pip check >&2
    echo "tools/venv.sh: pyproject.toml asks for something constraints.txt does not pin; run 'make lock'" >&2
    exit 1
  }
}

rm -rf "$venv"
cache=${CASSLE_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cassle/venvs}
if [[ "$cache" == "off" ]]; then
  log "building $venv (no cache)"
  "$python" -m venv "$venv"
  pip_install "$venv" -r "$root/constraints.txt"
  install_project "$venv"
  echo "$stamp" > "$venv/.cassle-stamp"
  exit 0
fi

deps="$cache/$key"
mkdir -p "$cache"
(
  flock 9
  if [[ ! -f "$deps/.complete" ]]; then
    log "building the dependency environment $deps (first time on this machine: a few minutes)"
    rm -rf "$deps"
    "$python" -m venv "$deps"
    pip_install "$deps" -r "$root/constraints.txt"
    touch "$deps/.complete"
  fi
) 9>"$cache/.lock"

log "creating $venv on top of $deps"
"$python" -m venv --without-pip "$venv"  # pip, setuptools and wheel come from the cache too
echo "import site; site.addsitedir('$(site_of "$deps")')" > "$(site_of "$venv")/_cassle_deps.pth"
# Console scripts of the dependencies (snakemake, mlflow, ...), re-pointed at this venv's interpreter.
for script in "$deps"/bin/*; do
  name=$(basename "$script")
  case "$name" in python*|activate*|Activate*) continue ;; esac
  [[ -f "$script" && ! -e "$venv/bin/$name" ]] || continue
  head -n 1 "$script" | grep -q '^#!.*python' || continue
  { echo "#!$venv/bin/python"; tail -n +2 "$script"; } > "$venv/bin/$name"
  chmod +x "$venv/bin/$name"
done
install_project "$venv"
echo "$stamp" > "$venv/.cassle-stamp"
