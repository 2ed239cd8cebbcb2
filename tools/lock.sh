#!/usr/bin/env bash
# Re-pin constraints.txt: install pyproject.toml's dependencies (+ test extras) into a scratch venv and freeze it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"${PYTHON:-python3}" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --disable-pip-version-check "$root[test]" wheel "setuptools>=77" \
  2> >(grep -v 'is ignored: it is neither' >&2)
{
  echo "# Fully pinned environment for reproducible installs (pip freeze of a clean install on Python 3.11)."
  echo "# tools/venv.sh installs exactly this; pyproject.toml lists the direct dependencies with ranges."
  echo "# Regenerate: make lock  (then commit)."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable | grep -v -E '^(cassle|pip)( @|==)'
} > "$root/constraints.txt"
echo "constraints.txt: $(grep -c '==' "$root/constraints.txt") pins"
