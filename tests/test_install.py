"""What an install is made of: pyproject.toml, the rules' conda environment (envs/coral.yaml) and the
pinned versions (envs/constraints.txt) name the same dependencies, and the version has one home."""
import importlib.metadata
import re

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import coral

from conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Left out of the conda environment on purpose (envs/coral.yaml says why).
HOST_ONLY = {"snakemake"}
# conda-forge's names where they differ from the package index's.
CONDA_NAMES = {"pytorch": "torch"}


def requirements(lines) -> dict[str, SpecifierSet]:
    found = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in found, f"{name} listed twice"
        found[name] = req.specifier
    return found


def conda_requirements(env: dict) -> dict[str, SpecifierSet]:
    """The conda packages (conda's `name>=1,<2` or `name=1.2` match specs) and the pip list of an
    environment file, as package-index requirements. Python and pip themselves are not dependencies."""
    lines = []
    for item in env["dependencies"]:
        if isinstance(item, dict):
            lines += item["pip"]
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", item)
        name, spec = match.group(1), match.group(2).replace(" ", "")
        if name in ("python", "pip"):
            continue
        if re.fullmatch(r"=[^=<>!].*", spec):  # conda's name=1.2 means 1.2.*
            spec = f"=={spec[1:]}.*"
        lines.append(CONDA_NAMES.get(name, name) + spec)
    return requirements(lines)


def test_the_conda_environment_lists_the_packages_dependencies():
    declared = requirements(PYPROJECT["project"]["dependencies"])
    env = conda_requirements(yaml.safe_load((REPO / "envs" / "coral.yaml").read_text()))
    assert HOST_ONLY <= set(declared)
    assert {name: str(spec) for name, spec in env.items()} == \
        {name: str(spec) for name, spec in declared.items() if name not in HOST_ONLY}


def pins() -> dict[str, Version]:
    found = {}
    for line in (REPO / "envs" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==" and not req.marker and not req.extras, line
            found[canonicalize_name(req.name)] = Version(spec.version)
    return found


def test_every_dependency_has_a_pin_that_satisfies_it():
    pinned = pins()
    project = PYPROJECT["project"]
    declared = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    for line in declared:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pinned, f"{name} has no pin in envs/constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} breaks {line}"
    assert canonicalize_name(project["name"]) not in pinned  # the package itself is installed from the checkout


def test_the_version_has_one_home():
    """pyproject reads coral.__version__; the installed metadata, when there is one, says the same."""
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "coral.__version__"}
    Version(coral.__version__)  # a valid version
    try:
        installed = importlib.metadata.version(PYPROJECT["project"]["name"])
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return
    assert installed == coral.__version__


def test_the_distribution_name_is_not_the_import_name_but_the_command_is():
    """`coral` on the package index is another project: the distribution is coral-lt, installing the
    package `coral` and the command `coral`."""
    project = PYPROJECT["project"]
    assert project["name"] == "coral-lt"
    assert project["scripts"] == {"coral": "coral.cli:main"}
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["coral*"]
    readme = (REPO / "README.md").read_text()
    assert "pip install coral " not in readme and "pip install coral\n" not in readme
