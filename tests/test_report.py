"""The HTML report: page structure without a browser, then a real headless Chromium.

The browser is driven with the Chrome DevTools Protocol over --remote-debugging-pipe
(fds 3 and 4, NUL-separated JSON): no websocket client, selenium or chromedriver needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import random
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState, create_trial

from nas.errors import NasError
from nas.report import render_report, write_report
from nas.results import finished_in_budget, pareto_front, pivot, trials_frame

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
BUDGET = 5_000_000
RETRAINED = [
    {"name": "cand-A", "params": 4_600_000, "test_acc": 0.935, "test_acc_std": 0.002, "val_acc": 0.88},
    {"name": "cand-B", "params": 2_100_000, "test_acc": 0.921, "test_acc_std": 0.003, "val_acc": 0.86},
    {"name": "cand-C", "params": 900_000, "test_acc": 0.902, "val_acc": 0.87},
]
BASELINES = [
    {"name": "ResNet-10 (report 2)", "params": 4_903_242, "test_acc": 0.9354},
    {"name": "ResNet-18", "params": 11_173_962, "test_acc": None},
]


def _frame(n: int = 40, seed: int = 3) -> pd.DataFrame:
    """A study as `nas search` leaves it: a mix of outcomes, accuracy growing with size."""
    rng = random.Random(seed)
    study = optuna.create_study(direction="maximize")
    for number in range(n):
        params = rng.randrange(200_000, 6_500_000, 50_000)
        blocks = [rng.randint(1, 3) for _ in range(rng.randint(2, 4))]
        outcome = "over_budget" if params > BUDGET else rng.choice(["complete"] * 5 + ["pruned", "oom"])
        acc = round(0.6 + 0.3 * (params / 6.5e6) ** 0.3 + rng.uniform(-0.05, 0.05), 4)
        state = TrialState.COMPLETE if outcome in ("complete", "over_budget") else TrialState.PRUNED
        study.add_trial(
            create_trial(
                state=state,
                value=acc if state == TrialState.COMPLETE else None,
                user_attrs={
                    "arch": {"blocks": blocks, "channels": [32 * 2**i for i in range(len(blocks))], "kernels": 3,
                             "skip_kernels": 1, "pool": None, "block": "basic", "se_ratio": 0, "groups": 1,
                             "dropout": 0.0, "num_classes": 10, "input_size": 32, "in_channels": 3},
                    "arch_id": f"{number:04x}beef", "params": params, "macs": params * 37,
                    "outcome": outcome, "reason": "" if outcome == "complete" else outcome,
                    "val_curve": [[1, acc - 0.2], [2, acc]] if outcome == "complete" else [],
                },
                constraints={"params_over_budget": float(params - BUDGET)},
            )
        )  # fmt: skip
    return trials_frame(study)


# ------------------------------------------------------------------------- without browser


def test_page_is_self_contained_with_stable_ids(tmp_path: Path) -> None:
    path = write_report(
        _frame(), tmp_path / "report.html", budget=BUDGET, retrained=RETRAINED, baselines=BASELINES, title="CIFAR <10>"
    )
    page = path.read_text()

    for element_id in ("pareto", "history", "rank", "leaderboard", "final", "outcomes", "rank-correlation"):
        assert f'id="{element_id}"' in page
    assert "<script src=" not in page and "<link" not in page  # nothing fetched: plotly.js is inline
    assert "<title>CIFAR &lt;10&gt;</title>" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_rank_correlation_needs_two_candidates_with_both_scores() -> None:
    one = render_report(_frame(), budget=BUDGET, retrained=RETRAINED[:1], title="t")
    assert 'id="rank-correlation"' not in one and 'id="rank"' not in one


def test_an_empty_study_still_renders() -> None:
    empty = trials_frame(optuna.create_study(direction="maximize"))
    assert 'id="pareto"' in render_report(empty, budget=BUDGET, title="nothing yet")


@pytest.mark.parametrize(
    ("retrained", "baselines", "message"),
    [
        ([{"name": "x", "params": 1, "test_acc": 93.1}], [], "test_acc=93.1: give accuracy as a fraction"),
        ([], [{"name": "x", "test_acc": 0.9}], r"lacks \['params'\]"),
        ([{"name": "x", "params": 1, "test_acc": None}], [], "every retrained entry needs a test_acc"),
    ],
)
def test_malformed_results_are_rejected(retrained: list, baselines: list, message: str) -> None:
    with pytest.raises(NasError, match=message):
        render_report(_frame(5), budget=BUDGET, retrained=retrained, baselines=baselines, title="t")


def test_budget_must_be_positive() -> None:
    with pytest.raises(NasError, match="budget=0"):
        render_report(_frame(5), budget=0, title="t")


# ---------------------------------------------------------------------- headless Chromium


class DevTools:
    """Minimal CDP client over Chromium's --remote-debugging-pipe, recording every event."""

    def __init__(self, chromium: Path, profile: Path, log: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: CDP reads fd 3, writes fd 4
            low_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            low_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(low_r, 3)
            os.dup2(low_w, 4)

        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*_no_network_prefix(), str(chromium), *flags],
                preexec_fn=wire_pipes, close_fds=False, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
            )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._from_browser, 1 << 20)
            assert chunk, f"Chromium closed the DevTools pipe (exit code {self.process.poll()})"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method} failed: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def wait_for_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(deadline))
        return next(e for e in self.events if e.get("method") == method)

    def evaluate(self, expression: str, session: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        finally:
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            os.close(self._to_browser)
            os.close(self._from_browser)


def _no_network_prefix() -> list[str]:
    """Run Chromium in a fresh network namespace (only a downed loopback) when allowed."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--net", "true"], capture_output=True).returncode == 0:
        return [unshare, "--net"]
    return []


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed by .ci/install-chromium when missing."""
    if not CHROMIUM.exists():
        install = subprocess.run(
            ["bash", str(REPO / ".ci" / "install-chromium")], capture_output=True, text=True, timeout=900
        )
        if install.returncode != 0 or not CHROMIUM.exists():
            pytest.skip(f"Chromium is not installed and .ci/install-chromium failed: {install.stderr[-500:]}")
    return CHROMIUM


@pytest.fixture()
def browser(chromium: Path, tmp_path: Path) -> Iterator[tuple[DevTools, str]]:
    """A page in an offline browser: (client, CDP session id), with every event recorded."""
    log = tmp_path / "chromium.log"
    tools = DevTools(chromium, tmp_path / "profile", log)
    try:
        target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            tools.call(f"{domain}.enable", session=session)
        tools.call(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            session,
        )
        tools.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session,
        )
        yield tools, session
    except AssertionError:
        print(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        tools.close()


_TRACE_POINTS = """
(() => {
  const gd = document.getElementById('pareto');
  const drawn = name => [...gd.querySelectorAll('.scatterlayer .trace')]
    .find(g => g.__data__ && g.__data__[0].trace.name === name)?.querySelectorAll('path.point').length;
  return gd._fullData.map(t => ({name: t.name, n: t.x.length, drawn: drawn(t.name),
                                 hover: Array.isArray(t.hovertext) ? t.hovertext[0] : null}));
})()
"""


def _errors(events: list[dict]) -> list[dict]:
    return [
        e
        for e in events
        if e.get("method") == "Runtime.exceptionThrown"
        or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
        or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]


def test_report_renders_offline_in_headless_chromium(browser: tuple[DevTools, str], tmp_path: Path) -> None:
    tools, session = browser
    frame = _frame()
    path = write_report(
        frame, tmp_path / "report.html", budget=BUDGET, retrained=RETRAINED, baselines=BASELINES, title="nas report"
    )

    tools.call("Page.navigate", {"url": path.as_uri()}, session)
    tools.wait_for_event("Page.loadEventFired")
    deadline = time.monotonic() + 20
    ready = "['pareto','history','rank'].every(id => document.getElementById(id)?._fullLayout)"
    while not tools.evaluate(ready, session):
        assert time.monotonic() < deadline, "plotly never drew the plots"
        time.sleep(0.1)
    traces = {t["name"]: t for t in tools.evaluate(_TRACE_POINTS, session)}
    height = tools.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        session,
    )
    shot = tools.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "report.png").write_bytes(base64.b64decode(shot["data"]))

    expected_front = len(pareto_front(frame))
    assert expected_front >= 3
    assert traces["Pareto front"]["n"] == traces["Pareto front"]["drawn"] == expected_front
    assert traces["trials (val acc, search schedule)"]["drawn"] == int(finished_in_budget(frame).sum())
    assert "blocks:" in traces["Pareto front"]["hover"] and "channels:" in traces["Pareto front"]["hover"]
    assert traces["retrained (test acc)"]["drawn"] == len(RETRAINED)
    assert {"hand-designed baselines (test acc)", "baselines (not trained)"} <= traces.keys()
    assert "Kendall" in tools.evaluate("document.getElementById('rank-correlation').textContent", session)
    assert tools.evaluate("document.querySelectorAll('#leaderboard tbody tr').length", session) == 10
    requests = [e["params"]["request"]["url"] for e in tools.events if e.get("method") == "Network.requestWillBeSent"]
    assert requests == [path.as_uri()]  # the page itself and nothing from the network
    assert _errors(tools.events) == []


# ------------------------------------------------------------------------- the write-up figures


def _grid_frame() -> pd.DataFrame:
    """A 2 x 3 recipe grid (optimizer x lr), two trials per cell, as a study with a train: section leaves it."""
    study = optuna.create_study(direction="maximize")
    grid = {"optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"]),
            "lr": optuna.distributions.CategoricalDistribution([0.01, 0.05, 0.2])}
    for number, (optimizer, lr) in enumerate([(o, lr) for o in ("sgd", "adam") for lr in (0.01, 0.05, 0.2)] * 2):
        acc = 0.7 + (0.1 if optimizer == "sgd" else 0.0) + lr / 2 + number / 1000
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=acc, params={"optimizer": optimizer, "lr": lr}, distributions=grid,
            user_attrs={"arch": {"blocks": [1, 1], "channels": [16, 32], "kernels": 3, "skip_kernels": 1, "pool": None,
                                 "block": "basic", "se_ratio": 0, "groups": 1, "dropout": 0.0, "num_classes": 3,
                                 "input_size": 32, "in_channels": 3},
                        "params": 100_000 + number, "macs": 1, "outcome": "complete",
                        "recipe": {"optimizer": optimizer, "lr": lr}},
            constraints={"params_over_budget": -1.0}))
    return trials_frame(study)


def _run(name: str, test_acc: float) -> dict[str, Any]:
    curves = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.0, "val_acc": 0.5 + 0.1 * e, "seconds": e}
              for e in (1, 2, 3)]
    return {"name": name, "seed": 0, "test_acc": test_acc, "curves": curves, "classes": ["cat", "dog", "frog"],
            "confusion": [[8, 1, 1], [2, 7, 1], [0, 0, 10]]}


def test_write_up_figures_answer_hover_and_legend_clicks(browser: tuple[DevTools, str], tmp_path: Path) -> None:
    tools, session = browser
    path = write_report(_grid_frame(), tmp_path / "report.html", budget=BUDGET, title="grid",
                        runs=[_run("cand-A", 0.81), _run("cand-B", 0.78)], importance={"lr": 0.7, "optimizer": 0.3})
    tools.call("Page.navigate", {"url": path.as_uri()}, session)
    tools.wait_for_event("Page.loadEventFired")
    ids = ["parallel", "importance", "pivot", "curves", "confusion-0", "confusion-1"]
    deadline = time.monotonic() + 20
    while not tools.evaluate(f"{json.dumps(ids)}.every(id => document.getElementById(id)?._fullLayout)", session):
        assert time.monotonic() < deadline, "plotly never drew the figures"
        time.sleep(0.1)
    assert "Best score by lr and optimizer" in tools.evaluate("document.body.textContent", session)  # most values first

    def click(x: float, y: float, kind: str = "click") -> None:
        if kind == "move":
            tools.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session)
            return
        for event in ("mousePressed", "mouseReleased"):
            tools.call("Input.dispatchMouseEvent", {"type": event, "x": x, "y": y, "button": "left", "clickCount": 1},
                       session)

    def centre(selector: str) -> tuple[float, float, float, float]:
        return tuple(tools.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                                    f"e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); "
                                    f"return [r.x, r.y, r.width, r.height]; }})()", session))

    # a click on the curves' first legend entry hides that run's curves and its test star
    x, y, w, h = centre("#curves .legend .traces")
    click(x + w / 2, y + h / 2)
    hidden = "document.getElementById('curves')._fullData.filter(t => t.legendgroup === 'cand-A seed 0')" \
             ".map(t => t.visible)"
    deadline = time.monotonic() + 5
    while tools.evaluate(hidden, session) != ["legendonly"] * 3:
        assert time.monotonic() < deadline, tools.evaluate(hidden, session)
        time.sleep(0.1)
    # hovering the pivot's cell (lr 0.2, sgd) shows its best score: the later of its two trials
    x, y, w, h = centre("#pivot .nsewdrag")
    table = pivot(_grid_frame(), "lr", "optimizer")
    row, col = list(table.index).index(0.2), list(table.columns).index("sgd")
    click(x + w * (col + 0.5) / len(table.columns), y + h * (1 - (row + 0.5) / len(table.index)), "move")
    deadline = time.monotonic() + 5
    while f"{table.loc[0.2, 'sgd']:.2%}" not in (tools.evaluate(
            "document.querySelector('#pivot .hoverlayer')?.textContent ?? ''", session) or ""):
        assert time.monotonic() < deadline, tools.evaluate("document.querySelector('#pivot .hoverlayer')?.textContent", session)
        time.sleep(0.1)
    assert _errors(tools.events) == []
