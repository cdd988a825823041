"""Architecture files (examples/*.json): a bare architecture, or {name, note, arch, recipe}.

One reader for every command: `nas count FILE`, `nas train FILE`, `nas retrain --arch FILE`. The
optional "recipe" holds the training settings the design's authors used; flags still override it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.arch import Arch
from nas.errors import NasError
from nas.recipe import Recipe

ENTRIES = ("name", "note", "arch", "recipe")


@dataclass(frozen=True)
class ArchFile:
    name: str
    arch: Arch
    recipe: tuple[tuple[str, Any], ...] = ()  # Recipe fields the file fixes
    path: str = ""


def read_arch_file(path: str | Path) -> ArchFile:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML; safe_load never builds objects
    except OSError as e:
        raise NasError(f"cannot read architecture file {str(path)!r} ({e.strerror}): pass an existing file, "
                       f"e.g. examples/resnet18.json") from None
    except yaml.YAMLError as e:
        raise NasError(f"{path}: not valid JSON/YAML ({getattr(e, 'problem', e)})") from None
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
    return ArchFile(name=str(data.get("name") or path.stem), arch=arch, recipe=tuple(sorted(recipe.items())),
                    path=str(path))
