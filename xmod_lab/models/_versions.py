"""The transformers versions xmod-lab supports. The range lives in pyproject.toml only; this reads it back
from the installed package's metadata."""

from __future__ import annotations

from importlib import metadata

import transformers
from packaging.requirements import Requirement
from packaging.version import Version


def supported_transformers_range() -> str | None:
    """The ``transformers`` specifier of xmod-lab's dependencies (None when xmod-lab is not installed)."""
    try:
        requires = metadata.requires("xmod-lab") or []
    except metadata.PackageNotFoundError:
        return None
    for line in requires:
        requirement = Requirement(line)
        if requirement.name == "transformers" and requirement.marker is None:
            return str(requirement.specifier)
    return None


def check_transformers_version(installed: str = transformers.__version__) -> None:
    """Raise ImportError naming the supported range when the installed transformers is outside it."""
    supported = supported_transformers_range()
    if supported is not None and not Requirement(f"transformers{supported}").specifier.contains(
        Version(installed), prereleases=True
    ):
        raise ImportError(
            f"xmod_lab.models needs transformers{supported} (its base classes, Cache and output types); "
            f"found transformers {installed}. Install a supported version: pip install 'transformers{supported}'"
        )
