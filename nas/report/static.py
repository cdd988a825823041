"""Static PNG/SVG files of the report's figures, for papers: `nas report --static png|svg`.

Drawn by kaleido (>= 1, Plotly's own exporter), which renders each figure with plotly.js in a local
Chrome/Chromium (through choreographer, over a pipe). Offline by construction: plotly.js is the copy inside
the plotly package and MathJax is turned off (kaleido's default fetches it from a CDN); no figure uses
LaTeX. kaleido is an optional extra (`pip install -e '.[figures]'`), so the report itself never needs it.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path

import plotly
import plotly.graph_objects as go

from nas.atomic import write_bytes_atomic
from nas.errors import NasError
from nas.report.figures import WIDTH

FORMATS = ("png", "svg")
PNG_SCALE = 2  # print resolution: 2400 px wide at the page's 1200
INSTALL = "pip install 'kaleido>=1' (nas's figures extra: pip install -e '.[figures]' in its checkout)"


def check(fmt: str) -> None:
    """Refuse an export that cannot run, before any work: the format, kaleido, and a browser for it."""
    if fmt not in FORMATS:
        raise NasError(f"--static={fmt!r} is not a static format: choose one of {', '.join(FORMATS)}")
    try:
        importlib.import_module("kaleido")
        from choreographer.browsers.chromium import Chromium
    except ImportError:
        raise NasError(f"--static needs kaleido, which is not installed: {INSTALL}") from None
    try:
        found = Chromium.find_browser(skip_local=False)
    except (AttributeError, TypeError, RuntimeError, ValueError):  # its API moved: kaleido will say at export
        return
    if not found:
        raise NasError("--static needs Chrome or Chromium (kaleido draws with it) and found none: install one "
                       "(e.g. apt install chromium) or set BROWSER_PATH to its executable")


def _specs(figures: Mapping[str, go.Figure], folder: Path, fmt: str) -> list[dict]:
    return [{"fig": fig.to_dict(), "path": folder / f"{name}.{fmt}",
             "opts": {"format": fmt, "width": WIDTH, "height": int(fig.layout.height or 500),
                      "scale": PNG_SCALE if fmt == "png" else 1}}
            for name, fig in figures.items()]


def write_static(figures: Mapping[str, go.Figure], folder: Path, fmt: str) -> list[Path]:
    """Write each figure to FOLDER/NAME.FMT (one browser for all of them); each file atomically, so a
    figure is either the old one or the new one."""
    check(fmt)
    import kaleido
    from kaleido.errors import BrowserFailedError, ChromeNotFoundError, KaleidoError

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    with tempfile.TemporaryDirectory(prefix="nas-static-") as staging:
        try:
            kaleido.write_fig_from_object_sync(_specs(figures, Path(staging), fmt),
                                               kopts={"mathjax": False, "plotlyjs": str(plotly_js)})
        except ChromeNotFoundError:
            raise NasError("--static needs Chrome or Chromium (kaleido draws with it) and found none: install one "
                           "(e.g. apt install chromium) or set BROWSER_PATH to its executable") from None
        except (BrowserFailedError, KaleidoError, OSError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise NasError(f"kaleido could not draw the static figures ({first}): the HTML report is written; "
                           "check that Chromium starts (chromium --headless --dump-dom about:blank)") from None
        return [write_bytes_atomic((Path(staging) / f"{name}.{fmt}").read_bytes(), Path(folder) / f"{name}.{fmt}")
                for name in figures]
