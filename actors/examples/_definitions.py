"""Where the examples are: found through the package, so any installed copy has them."""

from __future__ import annotations

from importlib import resources
from typing import Final

_PACKAGE: Final = __name__.rpartition(".")[0]

#: The module of the examples' activities, as ``--activities`` names it.
ACTIVITIES: Final = f"{_PACKAGE}.activities"


def definitions() -> list[tuple[str, str]]:
    """Every example definition: its file name and its YAML text, by file name."""
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in resources.files(_PACKAGE).iterdir()
        if entry.name.endswith(".yaml")
    )


def schedules() -> list[tuple[str, str]]:
    """Every example schedule: its file name and its YAML text, by file name."""
    folder = resources.files(_PACKAGE).joinpath("schedules")
    return sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )
