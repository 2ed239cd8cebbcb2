# Tables, average-rank ablations and figures from results/ (cassle report), captioned for `snakemake --report`.


def report_outputs():
    return [f"{REPORTS}/README.md"]


rule report:
    input:
        pretrain_outputs(),
        eval_outputs(),
    output:
        index=f"{REPORTS}/README.md",
        tables=report(
            directory(f"{REPORTS}/tables"),
            patterns=["{name}.md"],
            caption="../report/tables.rst",
            category="Tables",
        ),
        figures=report(
            directory(f"{REPORTS}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    resources:
        **launch_resources(config, "report", IN_JOB),
    shell:
        "{CASSLE} launch {resources.launch} -- report --results {RESULTS} --out {REPORTS} > {log} 2>&1"
