rule train:
    """One diffusion model per dataset x rho x method x seed; resumes from its newest checkpoint."""
    input:
        split="results/data/{dataset}/rho{rho}/split.npz",
    output:
        final=f"results/runs/{RUN}/final.pt",
    params:
        run=run_params,
        run_dir=lambda wildcards, output: os.path.dirname(output.final),
    threads: 1
    log:
        f"results/logs/train/{RUN}.log",
    benchmark:
        f"results/benchmarks/train/{RUN}.tsv"
    conda:
        ENV
    script:
        "../scripts/train.py"
