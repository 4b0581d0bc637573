rule subsample:
    """Long-tailed split of the balanced dataset (SPEC section 1)."""
    output:
        split="results/data/{dataset}/rho{rho}/split.npz",
        counts="results/data/{dataset}/rho{rho}/class_counts.csv",
    params:
        data=data_params,
    log:
        "results/logs/subsample/{dataset}-rho{rho}.log",
    conda:
        ENV
    script:
        "../scripts/subsample.py"


rule train_classifier:
    """Small classifier on the full balanced set: the feature extractor of small-scale metrics."""
    output:
        checkpoint="results/classifier/{dataset}/classifier.pt",
        summary="results/classifier/{dataset}/classifier.json",
    params:
        data=data_params,
        classifier=CFG["classifier"],
    threads: 1
    log:
        "results/logs/train_classifier/{dataset}.log",
    benchmark:
        "results/benchmarks/train_classifier/{dataset}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_classifier.py"
