# Every evaluation: `cassle eval TASK SOURCE --dataset D` on a pretraining run of the plan or on an external
# checkpoint, one job per (task, source, dataset) of the plan. Feature caches live next to metrics.json, undeclared.


def evaluation(wildcards):
    """The plan's evaluation for these wildcards."""
    for candidate in PLAN.evaluations.get(wildcards.task, []):
        if candidate.source == wildcards.source and candidate.dataset == wildcards.dataset:
            return candidate
    raise WorkflowError(f"no {wildcards.task} evaluation of {wildcards.source} on {wildcards.dataset} in the config")


def evaluation_inputs(wildcards):
    """The pretraining run's outputs; none for an external checkpoint (`cassle eval` checks that it exists)."""
    found = evaluation(wildcards)
    if found.external:
        return []
    return [f"{pretrain_dir(found.source)}/backbone.pt", f"{pretrain_dir(found.source)}/metrics.json"]


def evaluation_args(wildcards):
    return shlex.join(evaluation(wildcards).eval_args(Path(RESULTS)))


def evaluation_runtime_options(wildcards):
    """Device, workers, batch size: a resource, not a param (a rerun trigger); they do not change the result."""
    return shlex.join(evaluation(wildcards).runtime)


rule evaluate:
    input:
        evaluation_inputs,
    output:
        f"{RESULTS}/eval/{{task}}/{{source}}/{{dataset}}/metrics.json",
    params:
        args=evaluation_args,
        out=lambda wildcards, output: str(Path(output[0]).parent),
    log:
        f"{RESULTS}/logs/eval/{{task}}/{{source}}/{{dataset}}.log",
    threads: job_threads(config, "eval", IN_JOB)
    resources:
        **launch_resources(config, "eval", IN_JOB),
        runtime_options=evaluation_runtime_options,
    shell:
        "{CASSLE} launch {resources.launch} --job-dir {params.out}/work -- "
        "eval {params.args} {resources.runtime_options} --quiet > {log} 2>&1"
