rule evaluate:
    """Overall, per-class and head/medium/tail metrics of one sample set (SPEC section 6)."""
    input:
        samples=f"results/samples/{RUN}/{{sampler}}-w{{omega}}.npz",
        split="results/data/{dataset}/rho{rho}/split.npz",
        classifier="results/classifier/{dataset}/classifier.pt",
    output:
        metrics=f"results/metrics/{RUN}/{{sampler}}-w{{omega}}.json",
        per_class=f"results/metrics/{RUN}/{{sampler}}-w{{omega}}_per_class.csv",
    params:
        data=data_params,
        evaluate=CFG["evaluate"],
    threads: 1
    log:
        f"results/logs/evaluate/{RUN}/{{sampler}}-w{{omega}}.log",
    benchmark:
        f"results/benchmarks/evaluate/{RUN}/{{sampler}}-w{{omega}}.tsv"
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
