# One rule per evaluation task (eval_linear, eval_rotation, ...): `cassle eval TASK SOURCE --dataset D` on a
# pretraining run of the plan or on an external checkpoint. Feature caches live next to metrics.json, undeclared.


def eval_input(task):
    def inputs(wildcards):
        evaluation = find_evaluation(task, wildcards)
        if evaluation.external:  # an external checkpoint is not built here: `cassle eval` checks that it exists
            return []
        return [f"{pretrain_dir(evaluation.source)}/backbone.pt", f"{pretrain_dir(evaluation.source)}/metrics.json"]

    return inputs


def eval_args(task):
    return lambda wildcards: shlex.join(find_evaluation(task, wildcards).eval_args(Path(RESULTS)))


for eval_task in PLAN.evaluations:

    rule:
        name:
            f"eval_{eval_task}"
        input:
            eval_input(eval_task),
        output:
            f"{RESULTS}/eval/{eval_task}/{{source}}/{{dataset}}/metrics.json",
        params:
            args=eval_args(eval_task),
            out=lambda wildcards, output: str(Path(output[0]).parent),
        log:
            f"{RESULTS}/logs/eval/{eval_task}/{{source}}/{{dataset}}.log",
        threads: 1
        resources:
            **launch_resources("eval"),
            # device, workers, batch size: a resource, not a param (a rerun trigger); they do not change the result
            runtime_options=lambda wildcards, task=eval_task: shlex.join(find_evaluation(task, wildcards).runtime),
        shell:
            launched("eval {params.args} {resources.runtime_options} --quiet")
