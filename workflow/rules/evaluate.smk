rule train_classifier:
    """Small classifier on the balanced reference set: the feature extractor of small-scale metrics
    and the judge of per-class accuracy. Trains on the GPU when there is one; an interrupted job,
    run again, resumes from results/classifier/{dataset}/checkpoints/ (removed once it finishes)."""
    input:
        reference="results/data/{dataset}/reference.npz",
    output:
        checkpoint="results/classifier/{dataset}/classifier.pt",
        summary="results/classifier/{dataset}/classifier.json",
    params:
        **TRACKED["train_classifier"],
    threads: planned_threads("train_classifier")
    resources:
        **planned_resources("train_classifier"),
    log:
        "results/logs/train_classifier/{dataset}.log",
    benchmark:
        "results/benchmarks/train_classifier/{dataset}.tsv"
    conda:
        ENV
    script:
        "../scripts/train_classifier.py"


# torch-fidelity's Inception weights where evaluate.inception_download asks for them: fetched by a local job
# (on the submit host: compute nodes often have no internet) before the first job that reads them.
INCEPTION_DOWNLOADS = sorted({evaluate["inception_weights_path"] for evaluate in
                              (coral_grid.dataset_section(CFG, dataset, "evaluate") for dataset in DATASETS)
                              if evaluate["feature_extractor"] == "inception-v3-compat" and evaluate["inception_download"]})

if INCEPTION_DOWNLOADS:

    rule inception_weights:
        """torch-fidelity's Inception weights file (inception-v3-compat), from its release URL."""
        output:
            "{weights}",
        wildcard_constraints:
            weights=_alternatives(INCEPTION_DOWNLOADS),
        localrule: True
        run:
            from coral.sources import download_inception_weights

            download_inception_weights(output[0])


rule reference_features:
    """Features of a dataset's balanced reference set, extracted once and read by every evaluation of
    the dataset. The extractor's weights (classifier checkpoint or Inception file) are an input."""
    input:
        reference="results/data/{dataset}/reference.npz",
        weights=feature_weights_of,
    output:
        features="results/features/{dataset}/reference.npz",
    params:
        **TRACKED["reference_features"],
    threads: planned_threads("reference_features")
    resources:
        **planned_resources("reference_features"),
    log:
        "results/logs/reference_features/{dataset}.log",
    benchmark:
        "results/benchmarks/reference_features/{dataset}.tsv"
    conda:
        ENV
    script:
        "../scripts/reference_features.py"


rule evaluate:
    """Overall, per-class and head/medium/tail metrics of one sample set (docs/method.md §6)."""
    input:
        samples=f"results/samples/{RUN}/{{sampler}}-w{{omega}}.npz",
        split=split_of,
        reference_features=reference_features_of,
        classifier=classifier_of,
    output:
        metrics=f"results/metrics/{RUN}/{{sampler}}-w{{omega}}.json",
        per_class=f"results/metrics/{RUN}/{{sampler}}-w{{omega}}_per_class.csv",
    params:
        **TRACKED["evaluate"],
    threads: planned_threads("evaluate")
    resources:
        **planned_resources("evaluate"),
    log:
        f"results/logs/evaluate/{RUN}/{{sampler}}-w{{omega}}.log",
    benchmark:
        f"results/benchmarks/evaluate/{RUN}/{{sampler}}-w{{omega}}.tsv"
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
