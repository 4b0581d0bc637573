rule train:
    """One diffusion model per setting x method (or ablation run) x seed; resumes from its newest checkpoint."""
    input:
        split=split_of,
    output:
        final=f"results/runs/{RUN}/final.pt",
    params:
        **TRACKED["train"],
    threads: planned_threads("train")
    resources:
        gpu=1,
        **planned_resources("train"),
    retries: RETRIES["train"]
    log:
        f"results/logs/train/{RUN}.log",
    benchmark:
        f"results/benchmarks/train/{RUN}.tsv"
    conda:
        ENV
    script:
        "../scripts/train.py"
