CLAIM_INPUTS = claim_inputs()  # built once: the rule's inputs and params
# claims.csv records its identity (its stage's version, coral.identity.VERSIONS): a version raised reruns it
TRACKED["claims"] = {"identity": lambda wildcards: coral_identity.table("claims"), "inputs": CLAIM_INPUTS}


rule claims:
    """The paper's claims (coral/published/claims.yaml) tested across seeds: a row per claim, setting,
    comparison and metric with its paired effect, 95% interval and verdict (docs/method.md §7)."""
    input:
        claim_files(CLAIM_INPUTS),
    output:
        table="results/tables/claims.csv",  # in the report as its page (rule table_page)
        markdown="results/tables/claims.md",
    params:
        **TRACKED["claims"],
    resources:
        **planned_resources("claims"),
    log:
        "results/logs/tables/claims.log",
    conda:
        ENV
    script:
        "../scripts/claims.py"


rule claims_figure:
    """A forest plot of the claims table: every effect with its interval, coloured by verdict."""
    input:
        "results/tables/claims.csv",
    output:
        report("results/figures/claims.png", caption="../report/claims.rst", category="Claims"),
    resources:
        **planned_resources("claims_figure"),
    log:
        "results/logs/figures/claims.log",
    conda:
        ENV
    script:
        "../scripts/claims_figure.py"
