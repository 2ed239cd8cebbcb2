# One pretraining run. Only finished products are declared: the resumable checkpoints live in the undeclared
# RESULTS/pretrain/<run>/work/, which Snakemake never deletes, so a failed or killed job resumes where it stopped.


def pretrain_overrides(wildcards):
    """The run's `--set` overrides: a resource, not a param (a rerun trigger). Whatever changes the result already
    changes the run's folder (its config hash); the rest (runtime keys such as num_workers, the same config spelt
    another way or first asked for by another group) must not rerun a finished run."""
    return shlex.join(PLAN.runs[wildcards.run].pretrain_args())


rule pretrain:
    output:
        backbone=f"{RESULTS}/pretrain/{{run}}/backbone.pt",
        metrics=f"{RESULTS}/pretrain/{{run}}/metrics.json",
    params:
        out=lambda wildcards: pretrain_dir(wildcards.run),
    log:
        f"{RESULTS}/logs/pretrain/{{run}}.log",
    threads: job_threads(config, "pretrain", IN_JOB)
    resources:
        **launch_resources(config, "pretrain", IN_JOB),
        overrides=pretrain_overrides,
    shell:
        "{CASSLE} launch {resources.launch} --job-dir {params.out}/work -- "
        "pretrain {resources.overrides} --out {params.out} --quiet > {log} 2>&1"
