"""Installs that still work next year: the fragile dependencies have tested upper bounds, and
constraints.txt (what `make install` installs with) pins the versions the suite runs on."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
FRAGILE = ("transformers", "peft", "lightning", "trl", "bitsandbytes", "deepspeed", "lm_eval")
# Extras the suite's environment may lack (their tests skip): pinned, checked where installed.
OPTIONAL = ("trl", "deepspeed", "lm_eval")


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    listed = [*project["dependencies"], *extras["bench"], *extras["deepspeed"], *extras["harness"]]
    found: dict[str, Requirement] = {}
    for line in listed:
        requirement = Requirement(line)
        found.setdefault(requirement.name, requirement)
    return found


def pinned() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pairs = (line.split("==", 1) for line in lines if line and not line.startswith("#"))
    return {name.lower(): version for name, version in pairs}


@pytest.mark.parametrize("name", FRAGILE)
def test_a_fragile_dependency_has_an_upper_bound_that_admits_its_pinned_version(name):
    requirement = requirements()[name]
    assert any(spec.operator == "<" for spec in requirement.specifier), (
        f"pyproject.toml: {requirement} has no upper bound"
    )
    assert Version(pinned()[name]) in requirement.specifier, (
        f"constraints.txt pins {name}=={pinned()[name]} outside pyproject's {requirement}"
    )


@pytest.mark.parametrize(
    "name", [n for n in FRAGILE if n not in OPTIONAL] + ["hydra-core", "datasets"]
)
def test_the_suite_runs_on_the_pinned_versions(name):
    """The environment under test is the one constraints.txt reproduces (else: `make lock`
    after checking the new versions, or `make install` to get the pinned ones)."""
    assert metadata.version(name) == pinned()[name]


@pytest.mark.parametrize("name", OPTIONAL)
def test_an_installed_extra_is_the_pinned_version(name):
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed")
    assert installed == pinned()[name]


def test_make_install_installs_with_the_constraints_and_never_pins_torch_there():
    makefile = (ROOT / "Makefile").read_text()
    assert '$(PIP) install -c constraints.txt -e ".[dev]"' in makefile
    assert "torch" not in pinned() and not any(n.startswith("nvidia-") for n in pinned())


def test_the_dev_extra_installs_the_harness_so_the_suite_runs_the_agreement_test():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "medrl[harness]" in extras["optional-dependencies"]["dev"]
