#!/usr/bin/env bash
# Make `snakemake --profile slurm` work from the repository root: install profiles/slurm as the user profile `slurm`
# (Snakemake's user config folder, ~/.config/snakemake/slurm by default) unless a profile of that name exists there
# already, which is never touched. Usage: tools/snakemake_profile.sh [VENV_DIR]. docs/workflow.md has the rules.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python="${1:-$root/.venv}/bin/python"
folder=$("$python" -c 'from snakemake.common import get_appdirs; print(get_appdirs().user_config_dir)')
if [[ -e "$folder/slurm" ]]; then
  exit 0
fi
mkdir -p "$folder/slurm"
cp "$root/profiles/slurm/config.yaml" "$folder/slurm/config.yaml.tmp"
mv "$folder/slurm/config.yaml.tmp" "$folder/slurm/config.yaml"
echo "[venv] installed the Snakemake profile 'slurm' as $folder/slurm (from profiles/slurm)" >&2
