rule evaluate:
    """Overall, per-class and head/medium/tail metrics of one sample set (SPEC section 6)."""
    input:
        samples=f"results/samples/{RUN}/{{sampler}}-w{{omega}}.npz",
        split="results/data/{setting}/split.npz",
        reference=reference_of,
        classifier=classifier_of,
    output:
        metrics=f"results/metrics/{RUN}/{{sampler}}-w{{omega}}.json",
        per_class=f"results/metrics/{RUN}/{{sampler}}-w{{omega}}_per_class.csv",
    params:
        evaluate=evaluate_params,
    threads: 1
    resources:
        gpu=1,
    log:
        f"results/logs/evaluate/{RUN}/{{sampler}}-w{{omega}}.log",
    benchmark:
        f"results/benchmarks/evaluate/{RUN}/{{sampler}}-w{{omega}}.tsv"
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
