"""The packages a run was made with, as a pip constraints file in its folder.

`<run>/packages.txt` lists every installed distribution as `name==version` (medrl itself
aside: its commit is in each checkpoint's manifest). Reinstall them with
`pip install -c <run>/packages.txt -e ".[dev]"` in a checkout of that commit (README,
"Reproduce a run's installs"); torch's local tag (+cpu, +cu130) names the index it came from.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

from medrl.utils.io import write_atomic

log = logging.getLogger(__name__)

FILE_NAME = "packages.txt"
HEADER = (
    "# The packages this run was made with (pip constraints): reinstall them with\n"
    '#   pip install -c packages.txt -e ".[dev]"\n'
    "# in a checkout of the commit in checkpoints/*/manifest.json.\n"
)


def installed_packages() -> dict[str, str]:
    """{normalized name: version} of every installed distribution but medrl."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").strip()
        if name:
            found.setdefault(name.lower().replace("_", "-"), dist.version)
    found.pop("medrl", None)
    return dict(sorted(found.items()))


def constraints_text(packages: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in packages.items())


def write_packages(output_dir: Path) -> Path:
    """packages.txt in the run folder. A run continued with other packages keeps the first
    file and writes packages.resumed.txt beside it (logged), so neither record is lost."""
    text = constraints_text(installed_packages())
    path = output_dir / FILE_NAME
    if path.is_file() and path.read_text() != text:
        log.warning(
            "this run continues with other packages than it started with: see %s",
            path.with_suffix(".resumed.txt"),
        )
        path = path.with_suffix(".resumed.txt")
    elif path.is_file():
        return path
    return write_atomic(path, text)
