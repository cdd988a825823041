"""The `nas` application object and what every command shares: one-line errors, consoles, JSON output.

Every user error is a NasError printed as one line on stderr with exit code 2, never a traceback.
Consoles never read rich markup from text: names, paths and messages (`nas[postgres]`) print as written.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.text import Text

from nas.errors import NasError
from nas.stopping import Stopped

if TYPE_CHECKING:
    import nas.api

app = typer.Typer(
    help="Neural architecture search for ResNet image classifiers under a parameter budget.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)
# logs and pipes get wide lines (rich's 80-column default cut the leaderboard's architectures short)
out = Console(highlight=False, soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, markup=False)

# options shared by the commands that work on a study
Study = Annotated[str, typer.Option(help="Study name: its folder under --results-dir and its name in the storage.")]
Storage = Annotated[Optional[str], typer.Option(help="Optuna storage URL (sqlite:///..., postgresql://...). (default: RESULTS/STUDY/study.db)")]
ResultsDir = Annotated[Path, typer.Option("--results-dir", help="Where study folders are written.")]
Data = Annotated[str, typer.Option(help="cifar10 | cifar100 (downloaded once), an ImageFolder directory with train/ and test/, or a .tar.gz of one.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda (auto picks CUDA when available).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Protocol = Annotated[str, typer.Option(help="Starting recipe, flags override it: reference (the seed reports': SGD 0.1, cosine, batch 128, 200 epochs) | fast (16 epochs: whitened stem, one-cycle Nesterov, label smoothing, Lookahead, flip TTA) | airbench (airbench94's recipe, 10 epochs at batch 1024; for examples/airbench94.json).")]


def _version(show: bool) -> None:
    if show:
        try:
            out.print(f"nas {version('nas')}")
        except PackageNotFoundError:
            out.print("nas (not installed: run from a source tree)")
        raise typer.Exit()


@app.callback()
def main(show_version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = False) -> None:
    """Neural architecture search for ResNet image classifiers under a parameter budget."""


def command(fn: Callable) -> Callable:
    """Register a command whose NasErrors become one-line messages (exit 2)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NasError as e:
            err.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True)
            raise typer.Exit(2) from None
    return app.command()(wrapper)


def open_study(name: str, results_dir: Path, storage: Optional[str]) -> nas.api.Study:
    """The named study. nas.api (torch, Optuna) loads here, so commands that open none never load it."""
    from nas.api import Study

    return Study(name, results_dir, storage)


def exit_stopped(stop: Stopped) -> typer.Exit:
    """Say what a stop signal left behind, and exit 128 + the signal (raise what this returns)."""
    err.print(Text.assemble(("stopped", "bold red"), f" by {signal.Signals(stop.signal).name}: {stop.detail}; run "
                            f"the same command to resume"), soft_wrap=True)
    return typer.Exit(stop.exit_code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def pm(mean: Optional[float], std: Optional[float]) -> str:
    """'93.10% ± 0.20%', or '' when there is no value."""
    if mean is None:
        return ""
    return f"{mean:.2%}" + (f" ± {std:.2%}" if std is not None else "")
