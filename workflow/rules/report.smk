rule main_table:
    """A row per setting and method: metrics as mean and std over seeds."""
    input:
        metrics=METRICS,
    output:
        "results/tables/main.csv",  # in the report as its page, rule main_table_page
    resources:
        **planned_resources("main_table"),
    log:
        "results/logs/tables/main.log",
    conda:
        ENV
    script:
        "../scripts/main_table.py"


rule per_class_table:
    """A row per setting, method and class: per-class metrics as mean and std over seeds."""
    input:
        metrics=METRICS,
        per_class=PER_CLASS,
    output:
        "results/tables/per_class.csv",
    params:
        metrics_of=PER_CLASS_METRICS,  # each per-class CSV -> the metrics JSON of its run
    resources:
        **planned_resources("per_class_table"),
    log:
        "results/logs/tables/per_class.log",
    conda:
        ENV
    script:
        "../scripts/per_class_table.py"


rule latent_table:
    """Silhouette and k-NN purity of the bottleneck, overall and on the tail."""
    input:
        SEPARATION,
    output:
        "results/tables/latent.csv",
    resources:
        **planned_resources("latent_table"),
    log:
        "results/logs/tables/latent.log",
    conda:
        ENV
    script:
        "../scripts/latent_table.py"


rule paper_vs_ours:
    """Published numbers (docs/method.md §7) beside ours, with the difference."""
    input:
        main="results/tables/main.csv",
        published=os.path.join(workflow.basedir, "coral", "published", "coral_neurips2025.csv"),
    output:
        table="results/tables/paper_vs_ours.csv",
        markdown="results/tables/paper_vs_ours.md",
    resources:
        **planned_resources("paper_vs_ours"),
    log:
        "results/logs/tables/paper_vs_ours.log",
    conda:
        ENV
    script:
        "../scripts/paper_vs_ours.py"


rule ablation_table:
    """One ablation study: a row per method and value, over seeds."""
    input:
        metrics=study_metrics_of,
    output:
        "results/tables/ablation_{study}.csv",
    params:
        points=study_points_of,
        key=study_key_of,
    resources:
        **planned_resources("ablation_table"),
    log:
        "results/logs/tables/ablation_{study}.log",
    conda:
        ENV
    script:
        "../scripts/ablation_table.py"


if OMEGA_STUDY:
    OMEGA_TUNED_INPUTS = omega_tuned_inputs()  # built once: the rule's inputs and params

    rule omega_tuned_table:
        """Each method at its fixed omega and at the omega tuned on half of the reference set, both scored
        on the other half (coral.tables.omega_tuned_table)."""
        input:
            OMEGA_TUNED_INPUTS["metrics"],
        output:
            "results/tables/omega_tuned.csv",
        params:
            fixed=OMEGA_TUNED_INPUTS["fixed"],
        resources:
            **planned_resources("omega_tuned_table"),
        log:
            "results/logs/tables/omega_tuned.log",
        conda:
            ENV
        script:
            "../scripts/omega_tuned_table.py"


rule ablation_figure:
    input:
        "results/tables/ablation_{study}.csv",
    output:
        report("results/figures/ablation_{study}.png", caption="../report/ablation.rst", category="Ablations",
               subcategory="{study}"),
    resources:
        **planned_resources("ablation_figure"),
    log:
        "results/logs/figures/ablation_{study}.log",
    conda:
        ENV
    script:
        "../scripts/ablation_figure.py"


rule per_class_fid_figure:
    """Per-class FID of one setting: that setting's rows of the per-class table."""
    input:
        table="results/tables/per_class.csv",
    output:
        report("results/figures/per_class_fid_{setting}.png", caption="../report/per_class_fid.rst",
               category="Figures", subcategory="{setting}"),
    resources:
        **planned_resources("per_class_fid_figure"),
    log:
        "results/logs/figures/per_class_fid_{setting}.log",
    conda:
        ENV
    script:
        "../scripts/per_class_fid_figure.py"


rule tsne_figure:
    """t-SNE panels of one setting's first seed, one per method."""
    input:
        latent=tsne_files_of,
        split="results/data/{setting}/split.npz",
    output:
        report("results/figures/tsne_{setting}.png", caption="../report/tsne_bottleneck.rst",
               category="Figures", subcategory="{setting}"),
    params:
        panels=tsne_panels_of,  # method -> its features and separation files
    resources:
        **planned_resources("tsne_figure"),
    log:
        "results/logs/figures/tsne_{setting}.log",
    conda:
        ENV
    script:
        "../scripts/tsne_figure.py"


rule tsne_run_figure:
    """The t-SNE of one run, as its latent stage computed it, with its separation scores."""
    input:
        features=f"results/latent/{RUN}/features.npz",
        separation=f"results/latent/{RUN}/separation.json",
    output:
        report(f"results/figures/tsne/{RUN}.png", caption="../report/tsne_run.rst", category="t-SNE of each run",
               subcategory="{setting}", labels={"run": "{variant}", "seed": "{seed}"}),
    resources:
        **planned_resources("tsne_run_figure"),
    log:
        f"results/logs/figures/tsne/{RUN}.log",
    conda:
        ENV
    script:
        "../scripts/tsne_run_figure.py"


rule samples_figure:
    """Generated images of the first seed, a row per class from head to tail."""
    input:
        samples_of,
    output:
        report("results/figures/samples_{setting}_{variant}.png", caption="../report/samples.rst",
               category="Samples", subcategory="{setting}"),
    resources:
        **planned_resources("samples_figure"),
    log:
        "results/logs/figures/samples_{setting}_{variant}.log",
    conda:
        ENV
    script:
        "../scripts/samples_figure.py"


rule training_curves:
    """Loss terms, gradient norm and throughput against the step of one setting's main runs, a line per
    method (mean over seeds, min-max band). Each run's stats.jsonl is read through params: rule train
    appends to it and resumes into it, so it is no rule's output; the final checkpoints are the inputs,
    so the figure is drawn from finished runs and redrawn when one is retrained."""
    input:
        final=training_finals_of,
    output:
        report("results/figures/training_curves_{setting}.png", caption="../report/training_curves.rst",
               category="Figures", subcategory="{setting}"),
    params:
        runs=training_stats_of,  # each run's stats.jsonl -> its method and seed
    resources:
        **planned_resources("training_curves"),
    log:
        "results/logs/figures/training_curves_{setting}.log",
    conda:
        ENV
    script:
        "../scripts/training_curves.py"


# ---------------------------------------------------------------- the tables in the report
# Snakemake's report shows images and HTML pages but lists any other file (a .csv) with a download link
# only, which shows nothing in the report. So each table is in the report as an HTML page rendered from
# its CSV (coral.tables.html_page; the CSV itself is inside the page, to download), and the pages are
# targets beside the tables (targets.smk, pages). TABLE_PAGES (common.smk) says each page's category,
# title and the rule that makes its table; workflow/report/table_page.rst holds the captions.


rule table_page:
    input:
        "results/tables/{table}.csv",
    output:
        report("results/tables/{table}.html", caption="../report/table_page.rst",
               category=lambda wildcards: page_of(wildcards.table)["category"],
               subcategory=lambda wildcards: page_of(wildcards.table)["subcategory"]),
    params:
        title=lambda wildcards: page_of(wildcards.table)["title"],
        made_by=lambda wildcards: page_of(wildcards.table)["made_by"],
    localrule: True
    resources:
        **planned_resources("table_page"),
    log:
        "results/logs/tables/{table}_page.log",
    conda:
        ENV
    script:
        "../scripts/table_page.py"
