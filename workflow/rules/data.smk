rule subsample:
    """The long-tailed training set of a setting (docs/method.md §1): images, labels, class counts."""
    output:
        split="results/data/{setting}/split.npz",
        counts="results/data/{setting}/class_counts.csv",
    params:
        **TRACKED["subsample"],
    threads: planned_threads("subsample")
    resources:
        **planned_resources("subsample"),
    log:
        "results/logs/subsample/{setting}.log",
    conda:
        ENV
    script:
        "../scripts/subsample.py"


rule subsample_diagnosis:
    """A balanced training set of the imbalance-vs-scarcity diagnosis (data.training_set), drawn from
    the setting's balanced pool with its long-tailed counts' total or tail count."""
    output:
        split="results/data/{setting}/split_{training_set}.npz",
        counts="results/data/{setting}/class_counts_{training_set}.csv",
    params:
        **TRACKED["subsample_diagnosis"],
    threads: planned_threads("subsample")
    resources:
        **planned_resources("subsample"),
    log:
        "results/logs/subsample/{setting}_{training_set}.log",
    conda:
        ENV
    script:
        "../scripts/subsample.py"


rule reference:
    """The balanced set a dataset's samples are compared with (docs/method.md §6)."""
    output:
        reference="results/data/{dataset}/reference.npz",
    params:
        **TRACKED["reference"],
    threads: planned_threads("reference")
    resources:
        **planned_resources("reference"),
    log:
        "results/logs/reference/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/reference.py"
