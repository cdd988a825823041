"""Architecture files (examples/*.json): a bare architecture, or {name, note, arch, recipe}.

One reader for every command: `nas count FILE`, `nas train FILE`, `nas retrain --arch FILE`. The
optional "recipe" holds the training settings the design's authors used; flags still override it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.arch import Arch
from nas.engine.recipe import Recipe
from nas.errors import NasError, label
from nas.yamlfile import read_yaml

ENTRIES = ("name", "note", "arch", "recipe")


@dataclass(frozen=True)
class ArchFile:
    name: str
    arch: Arch
    recipe: tuple[tuple[str, Any], ...] = ()  # Recipe fields the file fixes
    path: str = ""


def read_arch_file(path: str | Path) -> ArchFile:
    path = Path(path)
    data = read_yaml(path, "architecture file", "examples/resnet18.json")  # JSON is YAML; never builds objects
    if not isinstance(data, dict):
        raise NasError(f"{path}: expected a mapping (an architecture, or one with an 'arch' entry), "
                       f"got {type(data).__name__}")
    try:
        arch = Arch.from_dict(data["arch"] if "arch" in data else {k: v for k, v in data.items() if k not in ENTRIES})
        recipe = data.get("recipe") or {}
        if not isinstance(recipe, dict):
            raise NasError(f"'recipe' must be a mapping of Recipe fields, got {type(recipe).__name__}")
        Recipe.from_dict(recipe)  # validate now, naming the file on error
    except (NasError, TypeError) as e:
        raise NasError(f"{path}: {e}") from None
    return ArchFile(name=label(data.get("name") or path.stem), arch=arch, recipe=tuple(sorted(recipe.items())),
                    path=str(path))
