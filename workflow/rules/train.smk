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
        **planned_resources("train"),  # train.devices GPUs of one node
    retries: RETRIES["train"]
    log:
        f"results/logs/train/{RUN}.log",
    benchmark:
        f"results/benchmarks/train/{RUN}.tsv"
    conda:
        ENV
    script:
        "../scripts/train.py"
