# One pretraining run. Only finished products are declared: the resumable checkpoints live in the undeclared
# RESULTS/pretrain/<run>/work/, which Snakemake never deletes, so a failed or killed job resumes where it stopped.


rule pretrain:
    output:
        backbone=f"{RESULTS}/pretrain/{{run}}/backbone.pt",
        metrics=f"{RESULTS}/pretrain/{{run}}/metrics.json",
    params:
        config=lambda wildcards: shlex.join(PLAN.runs[wildcards.run].pretrain_args()),
        out=lambda wildcards: pretrain_dir(wildcards.run),
    log:
        f"{RESULTS}/logs/pretrain/{{run}}.log",
    threads: 1
    resources:
        **launch_resources("pretrain"),
    shell:
        launched("pretrain {params.config} --out {params.out} --quiet")
