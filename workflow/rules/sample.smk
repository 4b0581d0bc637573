rule sample:
    """Generated images (uint8 + labels) from a run's EMA model, with a preview grid."""
    input:
        checkpoint=f"results/runs/{RUN}/final.pt",
    output:
        samples=f"results/samples/{RUN}/{{sampler}}-w{{omega}}.npz",
        preview=f"results/samples/{RUN}/{{sampler}}-w{{omega}}.png",
    params:
        **TRACKED["sample"],
    threads: planned_threads("sample")
    resources:
        **planned_resources("sample"),
    retries: RETRIES["sample"]
    log:
        f"results/logs/sample/{RUN}/{{sampler}}-w{{omega}}.log",
    benchmark:
        f"results/benchmarks/sample/{RUN}/{{sampler}}-w{{omega}}.tsv"
    conda:
        ENV
    script:
        "../scripts/sample.py"
