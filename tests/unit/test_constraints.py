"""The pins a test run installs (hack/constraints.txt) against the ranges
pyproject.toml declares: a range changed without re-freezing fails here,
naming the package, instead of as a resolver error in bootstrap."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in (ROOT / "hack" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
            found[canonicalize_name(name)] = Version(version.strip())
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return [Requirement(line) for line in lines]


def test_every_declared_requirement_is_pinned_inside_its_range() -> None:
    pinned = pins()
    wrong = []
    for requirement in declared():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not installed on this platform
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None or version not in requirement.specifier:
            wrong.append(f"{requirement} (pinned: {version or 'nothing'})")
    assert not wrong, "run `make constraints`, then `make test`: " + "; ".join(wrong)
