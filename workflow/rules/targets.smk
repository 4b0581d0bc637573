# The targets: every file of the main runs (rule main_runs) and of everything (rule all), and the report's
# page of each table (rule table_page).
CHECKPOINTS = runs(f"results/runs/{RUN}/final.pt")
METRICS = run_files("results/metrics/{run}/{tag}.json")
PER_CLASS_METRICS = per_class_metrics()
PER_CLASS = list(PER_CLASS_METRICS)
SEPARATION = runs(f"results/latent/{RUN}/separation.json")
ABLATION_CHECKPOINTS = [f"results/runs/{ABLATION_SETTING}/{variant}/seed{seed}/final.pt"
                        for study in STUDIES for variant in dict.fromkeys(
                            row["variant"] for row in coral_grid.study_rows(CFG, study)) for seed in SEEDS]
# The main runs' tables and figures (rule main) and the ablations' (rule all adds them).
MAIN_FIGURES = [
    *expand("results/figures/per_class_fid_{setting}.png", setting=SETTINGS),
    *expand("results/figures/tsne_{setting}.png", setting=SETTINGS),
    *runs(f"results/figures/tsne/{RUN}.png"),  # each run's own t-SNE (rule tsne_run_figure)
    *expand("results/figures/samples_{setting}_{variant}.png", setting=SETTINGS, variant=METHODS),
    *expand("results/figures/training_curves_{setting}.png", setting=SETTINGS),
]
ABLATION_FIGURES = expand("results/figures/ablation_{study}.png", study=STUDIES)
FIGURES = MAIN_FIGURES + ABLATION_FIGURES
MAIN_TABLES = [
    "results/tables/main.csv",
    "results/tables/per_class.csv",
    "results/tables/latent.csv",
    "results/tables/paper_vs_ours.csv",  # reads main.csv only: no runs of its own
]
ABLATION_TABLES = expand("results/tables/ablation_{study}.csv", study=STUDIES)
ABLATION_TABLES += ["results/tables/omega_tuned.csv"] if OMEGA_STUDY else []  # report.smk, rule omega_tuned_table
TABLES = MAIN_TABLES + ABLATION_TABLES
# The final checkpoints are targets too: Snakemake ignores a deleted intermediate file when
# everything after it exists, so listing them makes a deleted checkpoint retrain its run (and
# rerun the chain after it).
CLAIM_TARGETS = ["results/tables/claims.csv", "results/figures/claims.png"]  # the paper's claims, with verdicts


# Each table's page in the report (made by rule table_page), with its category and subcategory, its title
# and the rule that makes its table; the captions are in workflow/report/table_page.rst.
TABLE_PAGES = {
    "main": {"category": "Tables", "title": "Main results", "made_by": "main_table"},
    "per_class": {"category": "Tables", "title": "Per-class results", "made_by": "per_class_table"},
    "latent": {"category": "Tables", "title": "Bottleneck separation", "made_by": "latent_table"},
    "paper_vs_ours": {"category": "Tables", "title": "Published vs ours", "made_by": "paper_vs_ours"},
    "omega_tuned": {"category": "Ablations", "subcategory": OMEGA_STUDY, "title": "Tuned omega",
                    "made_by": "omega_tuned_table"},
    "claims": {"category": "Claims", "title": "The paper's claims", "made_by": "claims"},
}


def page_of(table):
    """The page of results/tables/<table>.csv: category, subcategory, title (with the file) and made_by."""
    if table.startswith("ablation_"):
        study = table.removeprefix("ablation_")
        page = {"category": "Ablations", "subcategory": study, "title": f"Ablation {study}", "made_by": "ablation_table"}
    else:
        page = TABLE_PAGES[table]
    return {"subcategory": None, **page, "title": f"{page['title']} (results/tables/{table}.csv)"}


def pages(tables):
    """The HTML page of each table: the report shows a table through its page (report.smk)."""
    return [table.removesuffix(".csv") + ".html" for table in tables]


MAIN_TARGETS = CHECKPOINTS + MAIN_TABLES + MAIN_FIGURES + pages(MAIN_TABLES)
ALL_TARGETS = (sorted(set(CHECKPOINTS + ABLATION_CHECKPOINTS)) + TABLES + FIGURES + CLAIM_TARGETS
               + pages(TABLES + CLAIM_TARGETS[:1]))
