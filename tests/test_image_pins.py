"""The image's pinned wheels cover lemd's runtime dependencies (docs/image.md "Updating the
pinned wheels"): a dependency added to pyproject.toml but not to the image's list would leave
the flashed daemon unable to start."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) --hash=sha256:[0-9a-f]{64}$")


def _image_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "image" / "requirements-arm64.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"image/requirements-arm64.txt: not NAME==VERSION --hash=sha256:…: {line!r}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_every_runtime_dependency_is_pinned_for_the_image() -> None:
    """Each [project].dependencies entry has a hashed pin in image/requirements-arm64.txt whose
    version satisfies pyproject's specifier."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _image_pins()
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a runtime dependency but has no pinned image wheel"
        assert req.specifier.contains(pins[name]), (
            f"{req.name}: image pins {pins[name]}, not {spec}"
        )
