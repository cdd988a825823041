"""`nas report --static`: figures as PNG/SVG files through kaleido and a local Chromium, with the network off."""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nas.errors import NasError
from nas.report.static import INSTALL, check

ROOT = Path(__file__).resolve().parents[1]

_EXPORT = """
import sys
from pathlib import Path
import plotly.graph_objects as go
from nas.report.static import write_static
figs = {name: go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]), layout={"title": f"figure {name}", "height": 300})
        for name in ("pareto", "history")}
print([str(p) for p in write_static(figs, Path(sys.argv[1]), sys.argv[2])])
"""


@pytest.fixture(scope="module")
def drawable() -> None:
    """kaleido and a Chromium for it (the `test` extra installs kaleido; .ci/install-chromium the browser)."""
    try:
        check("png")
    except NasError as e:
        pytest.skip(str(e))


def _offline() -> list[str]:
    """A fresh network namespace (only a downed loopback) where this machine allows one."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True).returncode == 0:
        return [unshare, "--net"]
    return []


def test_svg_files_are_drawn_with_the_network_off(drawable: None, tmp_path: Path) -> None:
    offline = _offline()
    if not offline:
        pytest.skip("this machine cannot make a network namespace (unshare --net) to prove the export offline")
    run = subprocess.run([*offline, sys.executable, "-c", _EXPORT, str(tmp_path / "figures"), "svg"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    for name in ("pareto", "history"):
        root = ET.parse(tmp_path / "figures" / f"{name}.svg").getroot()  # well-formed XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("width") == "1200"
        assert f"figure {name}" in "".join(root.itertext())  # drawn by plotly.js, title and all
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["history.svg", "pareto.svg"]  # no temp files


def test_a_format_other_than_png_or_svg_is_refused() -> None:
    with pytest.raises(NasError, match="--static='jpg' is not a static format: choose one of png, svg"):
        check("jpg")


def test_without_kaleido_the_error_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido raises ImportError
    with pytest.raises(NasError) as e:
        check("png")
    assert INSTALL in str(e.value) and "pip install 'kaleido>=1'" in str(e.value) and "\n" not in str(e.value)
