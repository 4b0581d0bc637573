"""The README is the front door: short, with both set-up commands, and every link of it and of the
docs pages leads to a file and a heading that exist."""
import re

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]
MAIN_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . && "
                "snakemake --cores all results/tables/main.csv")
TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]' && python -m pytest -q"


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def links(page) -> list[str]:
    """The targets of the page's markdown links that are not web addresses (code blocks left out)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return [target for target in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", target)]


def test_anchors_are_githubs():
    assert anchor("Does the paper hold? On the bundled dataset") == "does-the-paper-hold-on-the-bundled-dataset"
    assert anchor("§8 Where coral follows the released code") == "8-where-coral-follows-the-released-code"


def test_the_readme_is_a_front_door_with_both_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024
    assert MAIN_COMMAND in readme and TEST_COMMAND in readme
    assert TEST_COMMAND.split(" && ", 1)[1] in (REPO / ".ci" / "run").read_text()  # CI runs the README's tests


def test_every_link_leads_to_a_file_and_a_heading():
    broken = []
    for page in PAGES:
        for target in links(page):
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and file.suffix == ".md" and fragment not in anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
    assert sum(len(links(page)) for page in PAGES) > 20  # the pages were read
