"""nas export and latency on a really retrained run: parity with PyTorch on real test images, the
normalisation beside the file, nothing written when parity fails."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import nas
from nas import export as export_mod
from nas.engine.latency import measure_latency
from nas.errors import NasError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(small_cifar, tmp_path_factory) -> Path:
    """ResNet-12 narrow (examples/), retrained for one epoch on the small real CIFAR-10 copy."""
    runs = nas.Study("none", tmp_path_factory.mktemp("results")).retrain(
        arch_file=ROOT / "examples" / "resnet12-narrow.json", data=str(small_cifar), device="cpu", epochs=1,
        batch_size=50)
    return Path(runs[0]["dir"])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_matches_pytorch_on_real_test_images_and_records_its_input(run_dir, small_cifar, fmt):
    e = export_mod.export(run_dir, fmt)
    assert e.path == run_dir / ("model.onnx" if fmt == "onnx" else "model.pt") and e.path.stat().st_size > 10_000
    side = json.loads(e.sidecar.read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert side["normalization"]["mean"] == metrics["normalization"]["mean"] and side["input"]["layout"] == "NCHW"
    assert len(side["output"]["classes"]) == 10 and side["parity"]["max_abs_diff"] <= side["parity"]["tolerance"] * 10
    # an independent reader of the file, fed with the sidecar's recipe, agrees with the trained model
    test = nas.engine.data.load_split(str(small_cifar), "test")
    norm = side["normalization"]
    x = ((test.images.float() / 255 - torch.tensor(norm["mean"])[:, None, None]) / torch.tensor(norm["std"])[:, None, None])
    with torch.no_grad():
        expected = nas.load_model(run_dir)(x).argmax(1).numpy()
    if fmt == "onnx":
        import onnxruntime

        got = onnxruntime.InferenceSession(str(e.path)).run(None, {"images": x.numpy()})[0].argmax(1)
    else:
        with warnings.catch_warnings():  # deprecated in torch 2.14, still what LibTorch loads
            warnings.simplefilter("ignore", FutureWarning)
            got = torch.jit.load(str(e.path))(x).argmax(1).numpy()
    assert np.array_equal(got, expected)


def test_a_failed_parity_check_writes_nothing(run_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(export_mod, "TOLERANCE", -1.0)
    with pytest.raises(NasError, match="differs from the PyTorch model"):
        export_mod.export(run_dir, "torchscript", tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_export_errors_are_one_line(run_dir, tmp_path):
    with pytest.raises(NasError, match="--format='tflite' is unknown: choose one of onnx, torchscript"):
        export_mod.export(run_dir, "tflite")
    with pytest.raises(NasError, match="does not exist"):
        export_mod.export(run_dir, "onnx", tmp_path / "missing" / "m.onnx")
    with pytest.raises(NasError, match="not a finished retrain run|does not exist"):
        export_mod.export(tmp_path, "onnx")


def test_retrained_runs_record_latency_and_latency_excludes_warm_up(run_dir):
    latency = json.loads((run_dir / "metrics.json").read_text())["latency"]
    assert [row["batch"] for row in latency] == [1, 64]
    assert all(0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"] for row in latency)
    calls = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    model.register_forward_hook(lambda *a: calls.append(1))
    r = measure_latency(model, torch.device("cpu"), batch=4, warmup=2, runs=5)
    assert len(calls) == 7 and r.runs == 5 and r.images_per_s > 0
