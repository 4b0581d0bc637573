rule subsample:
    """The long-tailed training set of a setting (SPEC section 1): images, labels, class counts."""
    output:
        split="results/data/{setting}/split.npz",
        counts="results/data/{setting}/class_counts.csv",
    params:
        data=setting_data,
    log:
        "results/logs/subsample/{setting}.log",
    conda:
        ENV
    script:
        "../scripts/subsample.py"


rule reference:
    """The balanced set a dataset's samples are compared with (SPEC section 6)."""
    output:
        reference="results/data/{dataset}/reference.npz",
    params:
        data=dataset_data,
    log:
        "results/logs/reference/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/reference.py"


rule train_classifier:
    """Small classifier on the balanced reference set: the feature extractor of small-scale metrics
    and the judge of per-class accuracy."""
    input:
        reference="results/data/{dataset}/reference.npz",
    output:
        checkpoint="results/classifier/{dataset}/classifier.pt",
        summary="results/classifier/{dataset}/classifier.json",
    params:
        hflip=lambda wildcards: dataset_data(wildcards)["hflip"],
        classifier=CFG["classifier"],
    threads: 1
    resources:
        gpu=1,
    log:
        "results/logs/train_classifier/{dataset}.log",
    benchmark:
        "results/benchmarks/train_classifier/{dataset}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_classifier.py"
