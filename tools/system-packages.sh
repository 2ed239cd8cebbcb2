#!/usr/bin/env bash
# System packages the tests use beyond the Python environment, installed once where this runs as root with apt:
# Debian's chromium, for the browser test of the MLflow UI (tests/test_workflow.py skips it where none is installed).
# Never a browser download. Idempotent; a failed install only warns.
set -uo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tools/system-packages.sh: no chromium, and no root apt to install it: the browser test will be skipped" >&2
  exit 0
fi
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
  || echo "tools/system-packages.sh: warning: could not install chromium; the browser test will be skipped" >&2
exit 0
