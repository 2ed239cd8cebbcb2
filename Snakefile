# cassle: the paper's DAG. Every framework x variant is pretrained, evaluated, mirrored into MLflow and summarised
# into tables and figures. `snakemake --profile profiles/slurm` reproduces the paper from config/config.yaml;
# `make demo` runs config/demo.yaml on a laptop. The layout follows snakemake-workflow-template.

from snakemake.utils import min_version

min_version("9.0")

# The paper's grid unless a config file was given (--configfile config/demo.yaml, or a profile naming one).
if "pretrain" not in config:

    configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    report,


rule all:
    input:
        pretrain_outputs(),
        eval_outputs(),
        report_outputs(),
    default_target: True
