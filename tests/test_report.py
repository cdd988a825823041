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
from nas.report.figures import family_color
from nas.report.page import render_report, write_report
from nas.report.tables import finished_in_budget, pareto_front, pivot, trials_frame

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


def test_a_seed_design_that_trained_is_not_drawn_again_as_an_untrained_baseline() -> None:
    """CIFAR-100's report named simplenet-13 twice: its trial's square and the size-only triangle of its file."""
    from nas.report.figures import pareto_figure

    frame = _frame()
    seed = frame.index[finished_in_budget(frame)][0]
    frame.loc[seed, "seed_design"] = "simplenet-13"
    baselines = [{"name": "simplenet-13", "params": 4_613_028, "test_acc": None},
                 {"name": "wrn-16-4", "params": 2_772_020, "test_acc": None}]
    traces = {t.name: t for t in pareto_figure(frame, BUDGET, [], baselines).data}
    assert list(traces["seed designs"].text) == ["simplenet-13"]
    assert list(traces["baselines, size only (not trained)"].text) == ["wrn-16-4"]


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
    assert traces["basic"]["drawn"] == int(finished_in_budget(frame).sum())  # one block family, no seed designs
    assert "blocks:" in traces["Pareto front"]["hover"] and "channels:" in traces["Pareto front"]["hover"]
    assert traces["retrained"]["drawn"] == len(RETRAINED)
    assert {"baselines", "baselines, size only (not trained)"} <= traces.keys()
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


# ------------------------------------------------------------------- the search's own figures

FIDELITY = {"epochs": 4, "train_subset": 5000, "val_subset": 2000, "width": 0.25, "evals_per_epoch": 1}
SHORT, FINAL, RETRAIN = "4 ep x 5,000 img, width x0.25, val", "20 ep x 25,000 img, width x0.25, val", "retrain 200 ep"
CONFIRMED = {1: (0.60, 0.70), 2: (0.58, 0.74), 3: (0.55, 0.69), 4: (0.50, 0.66)}  # trial: (short, final rung)
TAU = (5 - 1) / 6  # of the 6 pairs only trials 1 and 2 swap places: (concordant - discordant) / pairs
LONG_SEED = "a-seed-design-with-a-name-far-too-long-for-any-table-column-x" * 2
FAMILIES = ("basic", "bottleneck", "preact")


def _search_trial(number: int, depth: int, family: str, outcome: str, acc: float, seed: str | None = None):
    params = 300_000 + 97_000 * number
    arch = {"blocks": [1 + number % 2] * depth, "channels": [16 * 2**i for i in range(depth)], "kernels": 3,
            "skip_kernels": 1, "pool": None, "block": family, "se_ratio": 0, "groups": 1, "dropout": 0.0,
            "num_classes": 10, "input_size": 32, "in_channels": 3}
    pruned = outcome == "pruned"
    return create_trial(
        state=TrialState.PRUNED if pruned else TrialState.COMPLETE, value=None if pruned else acc,
        params={"layers": depth}, distributions={"layers": optuna.distributions.CategoricalDistribution([2, 3, 4])},
        user_attrs={"arch": arch, "arch_id": f"{number:04x}cafe", "params": params, "macs": params * 40,
                    "outcome": outcome, "recipe": {"epochs": 4, "train_subset": 5000},
                    "val_curve": [[1, acc - 0.1], [2, acc]] if not pruned else [[1, acc]],
                    **({"seed_design": seed} if seed else {})},
        constraints={"params_over_budget": float(params - BUDGET)})


def _search_frame() -> pd.DataFrame:
    """A study after its final rung: three depths, three block families, two seed designs, pruned trials."""
    study = optuna.create_study(direction="maximize")
    study.add_trial(_search_trial(0, 3, "basic", "complete", 0.52, seed="seed-a"))
    for number, (short, _) in CONFIRMED.items():
        study.add_trial(_search_trial(number, 2 + number % 3, FAMILIES[number % 3], "complete", short))
    study.add_trial(_search_trial(5, 4, "bottleneck", "complete", 0.56, seed=LONG_SEED))
    for number in range(6, 24):
        outcome = "pruned" if number % 4 == 0 else "complete"
        study.add_trial(_search_trial(number, 2 + number % 3, FAMILIES[number % 3], outcome, 0.30 + number / 100))
    for number, (_, final) in CONFIRMED.items():
        study.set_user_attr(f"confirm.{number}", {"val_acc": final, "epochs": 20, "train_subset": 25000, "seconds": 1})
    return trials_frame(study)


def _latency_run(name: str, test_acc: float, ms: float) -> dict[str, Any]:
    return {**_run(name, test_acc), "params": 400_000, "train_images": 50_000, "device_name": "test-cpu",
            "curves": [{"epoch": e, "train_loss": 1.0, "val_loss": None, "val_acc": None, "seconds": e} for e in (1, 200)],
            "latency": [{"batch": 1, "median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.2},
                        {"batch": 64, "median_ms": ms * 20, "p10_ms": ms * 19, "p90_ms": ms * 22}]}


_LABEL_BOXES = """
[...document.querySelectorAll('#pareto .scatterlayer .textpoint text')].map(t => {
  const r = t.getBoundingClientRect(); return [t.textContent, r.left, r.top, r.right, r.bottom]; })
"""


def _centre_of(tools: DevTools, session: str, selector_js: str) -> tuple[float, float]:
    """Scroll the element that `selector_js` evaluates to into view; its centre in viewport pixels."""
    return tuple(tools.evaluate(f"(() => {{ const e = {selector_js}; e.scrollIntoView({{block: 'center'}}); "
                                f"const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
                                session))


def _wait(tools: DevTools, session: str, expression: str, expected: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (value := tools.evaluate(expression, session)) != expected:
        assert time.monotonic() < deadline, f"{expression} is {value!r}, expected {expected!r}"
        time.sleep(0.1)


def test_search_figures_draw_depths_ranks_seeds_latency_and_a_table_that_fits(browser: tuple[DevTools, str],
                                                                             tmp_path: Path) -> None:
    tools, session = browser
    frame = _search_frame()
    retrained = [{**e, "schedule": f"{RETRAIN} x 50,000 img, full width, test"} for e in RETRAINED]
    runs = [_latency_run("cand-A", 0.935, 2.0), _latency_run("cand-B", 0.921, 1.4)]
    path = write_report(frame, tmp_path / "report.html", budget=BUDGET, retrained=retrained, baselines=BASELINES,
                        title="search figures", runs=runs, fidelity=FIDELITY)
    tools.call("Page.navigate", {"url": path.as_uri()}, session)
    tools.wait_for_event("Page.loadEventFired")
    _wait(tools, session, "['pareto','history','rung-ranks','latency'].every(id => "
                          "document.getElementById(id)?._fullLayout !== undefined)", True, timeout=20)
    data = lambda div, js: tools.evaluate(f"document.getElementById('{div}')._fullData.{js}", session)  # noqa: E731
    _screenshot(tools, session, ARTIFACTS / "report-search.png")  # before any hover or click

    # history: one best-so-far line per depth, its trials as markers (pruned ones apart)
    assert data("history", "filter(t => t.name === 'best so far').map(t => t.legendgroup)") == ["N=2", "N=3", "N=4"]
    pruned = data("history", "filter(t => t.name === 'pruned').reduce((n, t) => n + t.x.length, 0)")
    assert pruned == int((frame["outcome"] == "pruned").sum()) == 4
    x, y = _centre_of(tools, session, "[...document.querySelectorAll('#history .legend .traces')]"
                                      ".find(g => g.__data__[0].trace.legendgroup === 'N=3')")
    for event in ("mousePressed", "mouseReleased"):
        tools.call("Input.dispatchMouseEvent", {"type": event, "x": x, "y": y, "button": "left", "clickCount": 1}, session)
    _wait(tools, session, "document.getElementById('history')._fullData.filter(t => t.legendgroup === 'N=3')"
                          ".map(t => t.visible)", ["legendonly"] * 3)

    # the final rung's trials: one line each, Kendall tau as computed by hand
    assert data("rung-ranks", "length") == len(CONFIRMED)
    title = tools.evaluate("document.getElementById('rung-ranks').layout.title.text", session)
    assert f"Kendall τ = {TAU:+.2f}" in title and f"{TAU:+.2f}" == "+0.67"
    assert FINAL in tools.evaluate("document.getElementById('rung-ranks').textContent", session)

    # accuracy vs parameters: families coloured, both seed designs drawn as named trained points
    traces = {t["name"]: t for t in data("pareto", "map(t => ({name: t.name, n: t.x.length, text: t.text, "
                                                   "color: t.marker?.color}))")}
    assert {f: traces[f]["color"] for f in FAMILIES} == {f: family_color(f) for f in FAMILIES}
    assert sorted(traces["seed designs"]["text"]) == sorted(["seed-a", LONG_SEED[:31] + "…"])  # hover: whole name
    assert "Pareto front" in traces
    labels = tools.evaluate(_LABEL_BOXES, session)
    assert len(labels) >= 2 + len(RETRAINED) + len(BASELINES)
    overlaps = [(a[0], b[0]) for i, a in enumerate(labels) for b in labels[i + 1:]
                if min(a[3], b[3]) > max(a[1], b[1]) and min(a[4], b[4]) > max(a[2], b[2])]
    assert overlaps == []
    # hovering a retrained star names its protocol
    x, y = _centre_of(tools, session, "[...document.querySelectorAll('#pareto .scatterlayer .trace')]"
                                      ".find(g => g.__data__[0].trace.name === 'retrained').querySelector('path.point')")
    tools.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session)
    _wait(tools, session, f"(document.querySelector('#pareto .hoverlayer')?.textContent ?? '').includes('{RETRAIN}')", True)

    # latency: one point per run; the leaderboard names each score's protocol and fits 1280 px
    assert data("latency", "reduce((n, t) => n + t.x.length, 0)") == len(runs)
    board = tools.evaluate("document.getElementById('leaderboard').textContent", session)
    assert SHORT in board and FINAL in board and LONG_SEED in board
    widths = tools.evaluate("[document.documentElement.scrollWidth, window.innerWidth, "
                            "document.getElementById('leaderboard').getBoundingClientRect().right]", session)
    assert widths[0] <= widths[1] == 1280 and widths[2] <= 1280
    assert _errors(tools.events) == []


def _screenshot(tools: DevTools, session: str, path: Path) -> None:
    """The whole page at 1280 px wide, for a person to look at."""
    tools.evaluate("window.scrollTo(0, 0)", session)
    height = tools.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
    tools.call("Emulation.setDeviceMetricsOverride",
               {"width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False}, session)
    shot = tools.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def test_the_pivot_takes_training_settings_first_then_the_most_important_knobs() -> None:
    from nas.report.writeup import varied_settings

    frame = _grid_frame()
    frame["sampled.channels_1"] = [16, 32] * 6  # two architecture knobs varied too, the fewer-valued one important
    frame["sampled.blocks_2"] = [1, 2, 3] * 4
    assert varied_settings(frame) == ["lr", "optimizer", "blocks_2", "channels_1"]
    assert varied_settings(frame, {"channels_1": 0.5, "blocks_2": 0.1}) == ["lr", "optimizer", "channels_1", "blocks_2"]
    # importance does not move an architecture knob ahead of the recipe a grid varied
    assert varied_settings(frame, {"channels_1": 0.9, "lr": 0.01})[:2] == ["lr", "optimizer"]


def _html_rows(table: str) -> list[list[str]]:
    """The text of every cell, row by row (header first), read by the standard library's HTML parser."""
    from html.parser import HTMLParser

    rows: list[list[str]] = []

    class Cells(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                rows.append([])
            elif tag in ("td", "th"):
                rows[-1].append("")

        def handle_data(self, data):
            if rows and rows[-1]:
                rows[-1][-1] += data.strip()

    Cells().feed(table)
    return rows


def test_outcomes_are_counted_per_block_family_when_the_search_varied_it() -> None:
    from nas.report.page import outcomes_table

    frame = _frame()
    assert _html_rows(outcomes_table(frame))[0] == ["outcome", "trials", "share"]  # one family: no columns
    frame["block"] = ["basic", "preact", "plain", "plain"] * (len(frame) // 4)
    header, *body = _html_rows(outcomes_table(frame))
    assert header == ["outcome", "trials", "share", "basic", "plain", "preact"]
    table = pd.DataFrame([[int(v) for v in r[3:]] for r in body], index=[r[0] for r in body], columns=header[3:])
    assert (table.sum(axis=1) == [int(r[1]) for r in body]).all()
    assert table.sum().to_dict() == frame["block"].value_counts().to_dict()
    assert table.loc["complete", "plain"] == ((frame["block"] == "plain") & (frame["outcome"] == "complete")).sum()


# ------------------------------------------------ issue 28 item 8: figures a user can trust, as `nas report` draws them


def _arch(number: int, depth: int, classes: int) -> Any:
    from nas.arch import Arch

    return Arch(blocks=tuple(1 + (number + i) % 3 for i in range(depth)),
                channels=tuple(16 * (1 + number % 4) * 2**i for i in range(depth)), num_classes=classes)


def _stored_trial(arch: Any, acc: float, outcome: str = "complete", seed: str | None = None,
                  objectives: tuple[str, ...] = ("accuracy",)):
    from nas.arch.counting import count_macs, count_params

    params, macs = count_params(arch), count_macs(arch)
    pruned = outcome == "pruned"
    values = [acc, *(params if c == "params" else macs for c in objectives[1:])]
    return create_trial(
        state=TrialState.PRUNED if pruned else TrialState.COMPLETE, values=None if pruned else values,
        params={"layers": arch.num_layers}, distributions={"layers": optuna.distributions.CategoricalDistribution([2, 3, 4])},
        intermediate_values={1: acc},
        user_attrs={"arch": arch.to_dict(), "arch_id": arch.id, "params": params, "macs": macs, "outcome": outcome,
                    "recipe": {"epochs": 4, "train_subset": 5000}, "val_curve": [[1, acc]],
                    **({"seed_design": seed} if seed else {})},
        constraints={"params_over_budget": float(params - BUDGET)})


def _stored_run(folder: Path, arch: Any, name: str, test_acc: float, trial: int | None, val_acc: float | None,
                ms: float) -> None:
    from nas.arch.counting import count_macs, count_params

    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "name": name, "arch_id": arch.id, "protocol": "p1", "arch": "N=3", "seed": 0, "trial": trial,
        "search_val_acc": val_acc, "params": count_params(arch), "macs": count_macs(arch), "test_acc": test_acc,
        "device_name": "test-cpu", "train_images": 50_000,
        "latency": [{"batch": 1, "median_ms": ms, "p10_ms": ms * 0.9, "p90_ms": ms * 1.15}]}))


def _trust_study(results: Path, kind: str) -> optuna.Study:
    """Three studies a user meets: CIFAR-10 after its final rung with seed designs and retrained runs (default),
    CIFAR-100 a few epochs in (every score near 1.6%, a pruned seed design, two retrained runs), and a
    multi-objective search (accuracy, MACs) whose final rung would change the front if its scores were mixed in."""
    rng = random.Random(kind)
    classes = 100 if kind == "cifar100" else 10
    objectives = ("accuracy", "macs") if kind == "multi" else ("accuracy",)
    (results / kind).mkdir(parents=True)
    study = optuna.create_study(study_name=kind, storage=f"sqlite:///{results / kind / 'study.db'}",
                                directions=["maximize"] + ["minimize"] * (len(objectives) - 1))
    study.set_user_attr("budget", BUDGET)
    study.set_user_attr("objectives", list(objectives))
    seeds = {"default": ["residual-network-design", "resnet10", "mini-project", "efficient-resnet-se"],
             "cifar100": ["wrn-16-4", "simplenet-13"], "multi": []}[kind]
    low, high = (0.012, 0.02) if kind == "cifar100" else (0.45, 0.72)
    for number in range(30):
        seed = seeds[number] if number < len(seeds) else None
        outcome = "pruned" if number % 5 == 2 or seed == "wrn-16-4" else "complete"  # so are two seed designs
        acc = round(rng.uniform(low, high), 4)
        arch = _arch(number, 2 if seed else 2 + number % 3, classes)  # seed designs within the budget
        study.add_trial(_stored_trial(arch, acc, outcome, seed, objectives))
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    rung = sorted(done, key=lambda t: -t.values[0])[: {"default": 4, "cifar100": 2, "multi": 5}[kind]]
    for i, t in enumerate(rung):  # the final rung reverses the short order: the short leader ends last
        final = t.values[0] + (0.01 * i if kind == "cifar100" else 0.05 + 0.04 * i)
        study.set_user_attr(f"confirm.{t.number}", {"val_acc": final, "epochs": 20, "train_subset": 25000})
    if kind != "multi":
        for i, t in enumerate(rung[:3]):
            arch = _arch(t.number, 2 + t.number % 3, classes)
            _stored_run(results / kind / "retrain" / f"{arch.id}-p1-seed0", arch, f"trial-{t.number}",
                        0.016 if kind == "cifar100" else 0.9 - 0.01 * i, t.number, t.values[0], 0.7 * 3.5**i)
    return study


_FIGURE_GEOMETRY = """
[...document.querySelectorAll('.js-plotly-plot')].map(gd => {
  const r = gd.getBoundingClientRect(), s = gd._fullLayout._size, L = gd._fullLayout;
  const axes = Object.keys(L).filter(k => /^[xy]axis\\d*$/.test(k) && L[k].tickformat === '.1%').map(k => L[k].range);
  const labels = [...gd.querySelectorAll('.scatterlayer .textpoint text')].filter(t => t.textContent).map(t => {
    const b = t.getBoundingClientRect();
    return [t.textContent, b.left - r.left, b.top - r.top, b.right - r.left, b.bottom - r.top]; });
  const centre = name => [...gd.querySelectorAll('.scatterlayer .trace')]
    .filter(g => g.__data__ && g.__data__[0].trace.name === name)
    .flatMap(g => [...g.querySelectorAll('path.point')]).map(p => {
      const b = p.getBoundingClientRect(); return [b.left + b.width / 2 - r.left, b.top + b.height / 2 - r.top]; });
  const hovers = name => gd._fullData.filter(t => t.name === name).flatMap(t => [...(t.hovertext ?? [])]).join(' ');
  return {id: gd.id, plot: [s.l, s.t, s.l + s.w, s.t + s.h], axes, labels, title: L.title?.text ?? '',
          accuracyBottom: L.yaxis ? L.yaxis._offset + L.yaxis._length : null, sizeOnly: centre('baselines, size only (not trained)'),
          best: centre('best trial'), finals: centre('final rung score'),
          seedHover: hovers('seed designs') + hovers('seed designs, pruned (last score)'), sizeOnlyHover: hovers('baselines, size only (not trained)'),
          front: gd._fullData.filter(t => (t.name ?? '').startsWith('Pareto front')).flatMap(t => [...t.x]),
          xticks: [...gd.querySelectorAll('.xtick text')].map(t => t.textContent)};
})
"""


@pytest.mark.parametrize("kind", ["default", "cifar100", "multi"])
def test_report_figures_a_user_can_trust(browser: tuple[DevTools, str], tmp_path: Path, kind: str) -> None:
    """Issue 28 item 8, as `nas report` draws it in Chromium: accuracy axes within 0-100% that fit the scores,
    every label inside its plot and clear of the others, size-only baselines in their own row, the best ring on
    the score that ranks, readable latency ticks, no tau below three pairs, and the front `nas leaderboard
    --front` lists."""
    from typer.testing import CliRunner

    from nas import record
    from nas.cli import app

    tools, session = browser
    results = tmp_path / "results"
    study = _trust_study(results, kind)
    report = CliRunner().invoke(app, ["report", "--study", kind, "--results-dir", str(results)])
    assert report.exit_code == 0, report.output
    front = CliRunner().invoke(app, ["leaderboard", "--study", kind, "--results-dir", str(results), "--front", "--json"])
    assert front.exit_code == 0, front.output
    listed = sorted(row["params"] for row in json.loads(front.output)["leaderboard"])
    tools.call("Page.navigate", {"url": (results / kind / "report.html").as_uri()}, session)
    tools.wait_for_event("Page.loadEventFired")
    _wait(tools, session, "['pareto','macs','history'].every(id => document.getElementById(id)?._fullLayout)", True, 20)
    _screenshot(tools, session, ARTIFACTS / f"report-trust-{kind}.png")
    figures = {f["id"]: f for f in tools.evaluate(_FIGURE_GEOMETRY, session)}

    for f in figures.values():
        for lo, hi in f["axes"]:
            assert 0 <= lo < hi <= 1, (f["id"], lo, hi)
        for name, x0, y0, x1, y1 in f["labels"] if f["id"] in ("pareto", "macs", "rank", "latency") else []:
            inside = f["plot"][0] - 1 <= x0 and x1 <= f["plot"][2] + 1 and f["plot"][1] - 1 <= y0 and y1 <= f["plot"][3] + 1
            assert inside, (f["id"], name, (x0, y0, x1, y1), f["plot"])
        overlaps = [(a[0], b[0]) for i, a in enumerate(f["labels"]) for b in f["labels"][i + 1:]
                    if min(a[3], b[3]) > max(a[1], b[1]) + 1 and min(a[4], b[4]) > max(a[2], b[2]) + 1]
        assert overlaps == [], f["id"]
    pareto = figures["pareto"]
    assert pareto["sizeOnly"] and all(y > pareto["accuracyBottom"] for _, y in pareto["sizeOnly"])
    for pruned in {"default": ["mini-project"], "cifar100": ["wrn-16-4"], "multi": []}[kind]:  # trained: its score
        assert pruned in pareto["seedHover"] and pruned not in pareto["sizeOnlyHover"]
    best = record.best(record.records(study))
    if best.final_acc is not None:  # the ring on the final rung's diamond of its trial
        assert any(abs(pareto["best"][0][0] - x) < 1 and abs(pareto["best"][0][1] - y) < 1 for x, y in pareto["finals"])
    assert sorted(pareto["front"]) == listed
    if kind == "default":
        shown = [t for t in figures["latency"]["xticks"] if t.endswith("ms")]
        assert len(shown) >= 3, figures["latency"]["xticks"]
    if kind == "cifar100":
        assert "too few to rank" in figures["rung-ranks"]["title"] and "τ =" not in figures["rung-ranks"]["title"]
        assert "too few to rank" in tools.evaluate("document.getElementById('rank-correlation').textContent", session)
    assert _errors(tools.events) == []
