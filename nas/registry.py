"""The one registry type behind every extension point (block families, samplers, pruners, optimizers,
schedules): a name -> entry dict that refuses a second entry of one name, and whose lookup of an unknown name
is one line naming the registered ones. Tests add entries with monkeypatch.setitem, which also removes them."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from nas.errors import NasError, shown

T = TypeVar("T")


class Registry(dict, Generic[T]):  # type: ignore[type-arg]
    def __init__(self, what: str, key: str) -> None:
        super().__init__()
        self.what, self.key = what, key  # e.g. "block family", "block" (how a user writes the choice)

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise NasError(f"{self.what} {name!r} is registered already")
        self[name] = entry
        return entry

    def named(self, name: Any) -> T:
        """The entry registered as `name`."""
        if not isinstance(name, str) or name not in self:
            raise NasError(f"{self.key}={shown(name)} is unknown: choose one of {', '.join(self)}")
        return self[name]
