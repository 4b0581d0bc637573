# Validation first, then the experiment grid and the input functions every rule uses.
import functools
import os
import re
import sys

# The Snakefile imports coral from this checkout (it puts workflow.basedir on sys.path); jobs find it
# through workflow/scripts/coral, a link to it (Snakemake puts the scripts' folder on sys.path), also in
# conda environments.
from coral import config as coral_config
from coral import grid as coral_grid
from coral import claims as coral_claims
from coral import identity as coral_identity
from coral import sections as coral_sections
from coral.config import ConfigError

try:
    CFG = coral_config.resolve(coral_config.from_command_line(config))
except ConfigError as err:
    sys.exit(f"config error: {err}")

# The process that plans the jobs (not a job's own) says which of the user's keys the preset overrides.
MAIN_PROCESS = not (workflow.remote_exec or workflow.subprocess_exec)
if MAIN_PROCESS:
    for line in coral_config.preset_warnings(coral_config.load_yaml(os.path.join(workflow.basedir, "config.yaml")),
                                             coral_config.from_command_line(config), CFG["preset"]):
        print(line, file=sys.stderr)

SETTINGS = coral_grid.settings(CFG)  # name -> {"dataset", "rho"}
DATASETS = list(dict.fromkeys(s["dataset"] for s in SETTINGS.values()))
METHODS = CFG["methods"]
VARIANTS = coral_grid.variants(CFG)  # methods and ablation runs, e.g. coral~tau_sc=0.5
SEEDS = [str(seed) for seed in CFG["seeds"]]
SAMPLER = f"ddim{CFG['sample']['steps']}" if CFG["sample"]["sampler"] == "ddim" else "ddpm"
ABLATION_SETTING = coral_grid.ablation_setting(CFG)
STUDIES = list(CFG["ablations"]["studies"])
RUN = "{setting}/{variant}/seed{seed}"  # a run: its folder under runs/, samples/, metrics/, latent/
ENV = "../../envs/coral.yaml"


def tag(omega) -> str:
    """File stem of one sample set: sampler and guidance, e.g. ddim50-w1.0."""
    return f"{SAMPLER}-w{float(omega)}"


@functools.cache  # once per setting and variant: it merges the setting's config
def run_tag(setting, variant) -> str:
    """The sample set of a main run: the guidance of its method (sample.omega may give one per method)."""
    method = VARIANTS[variant][0]
    return tag(coral_grid.omega_of(coral_grid.setting_config(CFG, setting)["sample"], method))


def run_files(template, settings=None):
    """`template` (with {run} and {tag}) for every run of the grid (setting x method x seed), or a setting's."""
    return [template.format(run=f"{setting}/{method}/seed{seed}", tag=run_tag(setting, method))
            for setting in settings or SETTINGS for method in METHODS for seed in SEEDS]


def _alternatives(values):
    return "|".join(re.escape(str(v)) for v in values)


wildcard_constraints:
    setting=_alternatives(SETTINGS),
    dataset=_alternatives(DATASETS),
    variant=_alternatives(VARIANTS),
    seed=r"\d+",
    sampler=re.escape(SAMPLER),  # the configured sampler only: another one in a target has no rule
    omega=r"[0-9]+\.[0-9]+",
    study=_alternatives(STUDIES),
    training_set="balanced_total|balanced_scarce",  # the long-tailed split is results/data/{setting}/split.npz
    table=_alternatives(["main", "per_class", "latent", "paper_vs_ours", "omega_tuned", "claims",
                         *(f"ablation_{study}" for study in STUDIES)]),


def runs(pattern, settings=None, variants=None, seeds=None, **fixed):
    """`pattern` expanded over the experiment grid (setting x method x seed), or a part of it."""
    return expand(pattern, setting=settings or list(SETTINGS), variant=variants or METHODS, seed=seeds or SEEDS,
                  **fixed)


def dataset_of(wildcards):
    return SETTINGS[wildcards.setting]["dataset"]


def reference_of(wildcards):
    return f"results/data/{dataset_of(wildcards)}/reference.npz"


def classifier_of(wildcards):
    return f"results/classifier/{dataset_of(wildcards)}/classifier.pt"


def run_params(wildcards):
    """A run's config as its training job gets it: train.micro_batch_size chosen for cluster.gpu where the
    config leaves it 0 and the per-device batch would not fit (coral.plan; outside the run's identity)."""
    return COST.fitted_run(coral_grid.run_config(CFG, wildcards.setting, wildcards.variant, int(wildcards.seed)))


def split_of(wildcards):
    """The training set of a run: its setting's long-tailed split, or a balanced set of the diagnosis."""
    training_set = run_params(wildcards)["data"]["training_set"]
    if training_set == "long_tailed":
        return f"results/data/{wildcards.setting}/split.npz"
    return f"results/data/{wildcards.setting}/split_{training_set}.npz"


def diagnosis_data(wildcards):
    return {**setting_data(wildcards), "training_set": wildcards.training_set}


def sample_params(wildcards):
    """A sampling job's section: this omega, and sample.batch_size chosen for cluster.gpu where the
    configured one would not fit (coral.plan; outside the sample set's identity)."""
    return COST.fitted_sample(wildcards.setting, wildcards.variant, float(wildcards.omega))


def setting_data(wildcards):
    return coral_grid.setting_config(CFG, wildcards.setting)["data"]


def dataset_data(wildcards):
    return coral_grid.dataset_config(CFG, wildcards.dataset)


def evaluate_params(wildcards):
    return coral_grid.setting_config(CFG, wildcards.setting)["evaluate"]


def latent_params(wildcards):
    return coral_grid.setting_config(CFG, wildcards.setting)["latent"]


def classifier_params(wildcards):
    return coral_grid.dataset_section(CFG, wildcards.dataset, "classifier")


def study_points(study):
    """{metrics JSON: the value of the study's key} of every point and seed of an ablation study, in table order."""
    return {f"results/metrics/{ABLATION_SETTING}/{row['variant']}/seed{seed}/{tag(row['omega'])}.json":
            row["value"]
            for row in coral_grid.study_rows(CFG, study) for seed in SEEDS}


# The study of sample.omega (if any): its sample sets, with the main runs', give each method a tuned omega.
OMEGA_STUDY = next((name for name, study in CFG["ablations"]["studies"].items()
                    if study.get("key") == coral_grid.SAMPLING_KEY), None)


def omega_tuned_inputs():
    """The metrics JSONs the omega_tuned table reads: every point of the omega study and the main runs of
    its methods on the ablation setting (their fixed omega), and each method's fixed omega."""
    methods = CFG["ablations"]["studies"][OMEGA_STUDY]["methods"]
    main = [f"results/metrics/{ABLATION_SETTING}/{method}/seed{seed}/{run_tag(ABLATION_SETTING, method)}.json"
            for method in methods for seed in SEEDS]
    sample_cfg = coral_grid.setting_config(CFG, ABLATION_SETTING)["sample"]
    return {"metrics": list(dict.fromkeys(list(study_points(OMEGA_STUDY)) + main)),
            "fixed": {method: coral_grid.omega_of(sample_cfg, method) for method in methods}}


def samples_of(wildcards):
    """The first seed's sample set of a main run (its method's guidance)."""
    return f"results/samples/{wildcards.setting}/{wildcards.variant}/seed{SEEDS[0]}/{run_tag(wildcards.setting, wildcards.variant)}.npz"


def claim_inputs():
    """What the claims table reads (coral.claims.read_records): each main run's metrics JSON -> its
    separation JSON, and for each study the paper's claims test, each point's metrics JSON -> its value
    and separation JSON (None where no claim on that study reads the bottleneck)."""
    latent = coral_claims.needs_latent()
    main = {metrics: separation if "main" in latent else None for metrics, separation in
            zip(run_files("results/metrics/{run}/{tag}.json"), run_files("results/latent/{run}/separation.json"))}
    studies = {claim["runs"] for claim in coral_claims.registry()} & set(STUDIES)
    points = {study: {metrics: {"value": value, "separation": re.sub(r"^results/metrics/(.*)/[^/]+\.json$",
                                                                     r"results/latent/\1/separation.json", metrics)
                                if study in latent else None}
                      for metrics, value in study_points(study).items()}
              for study in STUDIES if study in studies}
    return {"main": main, "studies": points}


def claim_files(inputs):
    """Every file of claim_inputs()."""
    files = [path for pair in inputs["main"].items() for path in pair if path]
    files += [path for points in inputs["studies"].values() for metrics, point in points.items()
              for path in (metrics, point["separation"]) if path]
    return sorted(set(files))


def study_metrics_of(wildcards):
    return list(study_points(wildcards.study))


def study_points_of(wildcards):
    return study_points(wildcards.study)


def study_key_of(wildcards):
    """The dotted key a study varies (None: a comparison of methods)."""
    return CFG["ablations"]["studies"][wildcards.study].get("key")


def per_class_metrics():
    """{per-class CSV: the metrics JSON of the same run} of every run of the experiment grid."""
    return dict(zip(run_files("results/metrics/{run}/{tag}_per_class.csv"), run_files("results/metrics/{run}/{tag}.json")))


def tsne_panels(setting):
    """{method: {"features", "separation"}} of a setting's first seed: the panels of its t-SNE figure, in
    the order of `methods`."""
    return {method: {"features": f"results/latent/{setting}/{method}/seed{SEEDS[0]}/features.npz",
                     "separation": f"results/latent/{setting}/{method}/seed{SEEDS[0]}/separation.json"}
            for method in METHODS}


def tsne_panels_of(wildcards):
    return tsne_panels(wildcards.setting)


def tsne_files_of(wildcards):
    """Every file of the panels of a setting's t-SNE figure."""
    return [path for files in tsne_panels(wildcards.setting).values() for path in files.values()]


def training_stats(setting):
    """{stats.jsonl: {"method", "seed"}} of a setting's main runs (every method and seed, no ablation
    variant): the lines of its training-curves figure."""
    return {f"results/runs/{setting}/{method}/seed{seed}/stats.jsonl": {"method": method, "seed": int(seed)}
            for method in METHODS for seed in SEEDS}


def training_stats_of(wildcards):
    return training_stats(wildcards.setting)


def training_finals_of(wildcards):
    """The final checkpoints of a setting's main runs: stats.jsonl is no rule's output (rule train resumes
    into it), so the training-curves figure waits for the runs to finish through these."""
    return runs(f"results/runs/{RUN}/final.pt", settings=[wildcards.setting])


def classifier_hflip(wildcards):
    return dataset_data(wildcards)["hflip"]


def run_dir(wildcards, output):
    return os.path.dirname(output.final)


# ---------------------------------------------------------------- reference features (rule reference_features)
def dataset_evaluate(wildcards):
    """The evaluate config of a dataset (the same in each of its settings), from its first setting."""
    return coral_grid.dataset_section(CFG, wildcards.dataset, "evaluate")


def feature_weights_of(wildcards):
    """The weights of a dataset's feature extractor: its classifier checkpoint or the Inception file."""
    evaluate = dataset_evaluate(wildcards)
    if evaluate["feature_extractor"] == "inception-v3-compat":
        return evaluate["inception_weights_path"]
    return f"results/classifier/{wildcards.dataset}/classifier.pt"


def reference_features_params(wildcards):
    return coral_sections.of_dataset(CFG, wildcards.dataset, "evaluate").extractor.as_dict()


def reference_features_of(wildcards):
    return f"results/features/{dataset_of(wildcards)}/reference.npz"


# ---------------------------------------------------------------- what reruns a job (coral/identity.py)
# Rules whose outputs record an identity get two params from TRACKED. `identity` is the part of a job's
# config that changes its numbers (what Snakemake compares to decide a rerun); the job's whole section
# comes as coral.identity.Settings, which Snakemake does not compare. The workflow's start
# (preflight.smk) checks the finished outputs of these rules against the identity the config gives now.
def settings(section_of):
    """The job's config section as Settings: read by the job, not compared by Snakemake."""
    def section(wildcards):
        return coral_identity.Settings(section_of(wildcards))
    return section


def method_of(wildcards):
    return VARIANTS[wildcards.variant][0]


TRACKED = {
    "subsample": {"identity": lambda w: coral_identity.split(setting_data(w)), "data": settings(setting_data)},
    "subsample_diagnosis": {"identity": lambda w: coral_identity.split(diagnosis_data(w)),
                            "data": settings(diagnosis_data)},
    "reference": {"identity": lambda w: coral_identity.reference(dataset_data(w)), "data": settings(dataset_data)},
    "train_classifier": {"identity": lambda w: coral_identity.classifier(classifier_params(w), classifier_hflip(w)),
                         "hflip": classifier_hflip, "classifier": settings(classifier_params)},
    "reference_features": {"identity": lambda w: coral_identity.features(reference_features_params(w)),
                           "extractor": settings(reference_features_params)},
    "train": {"identity": lambda w: coral_identity.run(run_params(w)), "run": settings(run_params),
              "run_dir": run_dir},
    "sample": {"identity": lambda w: coral_identity.sample(sample_params(w), method_of(w)),
               "sample": settings(sample_params)},
    "evaluate": {"identity": lambda w: coral_identity.evaluate(evaluate_params(w)),
                 "evaluate": settings(evaluate_params)},
    "latent": {"identity": lambda w: coral_identity.latent(latent_params(w)), "latent": settings(latent_params)},
}

