rule latent:
    """Bottleneck features of real balanced images at t = 0.1 T, their t-SNE and separation scores (drawn
    by rule tsne_run_figure)."""
    input:
        checkpoint=f"results/runs/{RUN}/final.pt",
        split=split_of,
        reference=reference_of,
    output:
        features=f"results/latent/{RUN}/features.npz",
        separation=f"results/latent/{RUN}/separation.json",
    params:
        **TRACKED["latent"],
    threads: planned_threads("latent")
    resources:
        **planned_resources("latent"),
    log:
        f"results/logs/latent/{RUN}.log",
    benchmark:
        f"results/benchmarks/latent/{RUN}.tsv"
    conda:
        ENV
    script:
        "../scripts/latent.py"
