rule main_table:
    """A row per setting and method: metrics as mean and std over seeds."""
    input:
        metrics=METRICS,
    output:
        "results/tables/main.csv",
    log:
        "results/logs/tables/main.log",
    conda:
        ENV
    script:
        "../scripts/main_table.py"


rule per_class_table:
    input:
        metrics=METRICS,
        per_class=PER_CLASS,
    output:
        "results/tables/per_class.csv",
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
    log:
        "results/logs/tables/latent.log",
    conda:
        ENV
    script:
        "../scripts/latent_table.py"


rule per_class_fid_figure:
    input:
        "results/tables/per_class.csv",
    output:
        report("results/figures/per_class_fid.png", caption="../report/per_class_fid.rst", category="Figures"),
    log:
        "results/logs/figures/per_class_fid.log",
    conda:
        ENV
    script:
        "../scripts/per_class_fid_figure.py"


rule tsne_figure:
    """t-SNE panels of the first rho and seed, one per method."""
    input:
        features=runs(f"results/latent/{RUN}/features.npz", rho=RHOS[0], seed=SEEDS[0]),
        separation=runs(f"results/latent/{RUN}/separation.json", rho=RHOS[0], seed=SEEDS[0]),
        split=f"results/data/{DATASET}/rho{RHOS[0]}/split.npz",
    output:
        report("results/figures/tsne_bottleneck.png", caption="../report/tsne_bottleneck.rst", category="Figures"),
    params:
        methods=METHODS,
    log:
        "results/logs/figures/tsne_bottleneck.log",
    conda:
        ENV
    script:
        "../scripts/tsne_figure.py"


rule samples_figure:
    """Generated images of the first seed, a row per class from head to tail."""
    input:
        f"results/samples/{{dataset}}-rho{{rho}}/{{method}}/seed{SEEDS[0]}/{TAG}.npz",
    output:
        report("results/figures/samples_{dataset}-rho{rho}_{method}.png", caption="../report/samples.rst",
               category="Samples", subcategory="{dataset}-rho{rho}"),
    log:
        "results/logs/figures/samples_{dataset}-rho{rho}_{method}.log",
    conda:
        ENV
    script:
        "../scripts/samples_figure.py"
