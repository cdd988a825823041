"""The architecture: what a network is (ops, families, Arch), how it is laid out, counted and built, and the
search spaces that enumerate it. Nothing here trains; nothing here but model.py imports torch."""

from nas.arch.architecture import Arch, short_hash

__all__ = ["Arch", "short_hash"]
