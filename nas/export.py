"""Deployable files from a retrained run: ONNX or TorchScript, checked against the PyTorch model on real
test images when written, with the normalisation the model expects saved beside it.

A file is only as good as its parity: an exporter can change numerics (fused BatchNorm, other kernels),
so every export runs the same real images through both and refuses a file whose logits differ by more
than TOLERANCE. The sidecar JSON says how to feed the network: uint8 RGB scaled to [0, 1], then
normalised per channel with the training split's statistics, NCHW float32.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from nas.atomic import write_bytes_atomic, write_json_atomic
from nas.errors import NasError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4  # max |logit difference| allowed, relative to max(1, max |logit|)


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    sidecar: Path  # the normalisation and input contract
    max_abs_diff: float  # against the PyTorch model, on `images` real test images
    images: int


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None, data: str | None = None,
           images: int = 256) -> Exported:
    """Write the run's model as `fmt` (default file: RUN_DIR/model.onnx or model.pt), check it on `images`
    test images of the run's data (or `data`), and write OUT.json beside it."""
    from nas.runs import load_model, load_stats, read_metrics

    if fmt not in FORMATS:
        raise NasError(f"--format={fmt!r} is unknown: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        _onnx_runtime()  # a missing extra is found before the model is loaded and the test split decoded
    run_dir = Path(run_dir)
    model, stats, metrics = load_model(run_dir), load_stats(run_dir), read_metrics(run_dir)
    x, classes = _real_inputs(data or metrics["data"], stats, images)
    path = Path(out) if out else run_dir / f"model{FORMATS[fmt]}"
    if not path.parent.is_dir():
        raise NasError(f"--out={str(path)!r}: folder {str(path.parent)!r} does not exist; create it or pick another")
    with torch.no_grad():
        expected = model(x)
    diff = _write_checked(model, x, expected, path, fmt)
    sidecar = write_json_atomic({
        "format": fmt, "file": path.name, "input": {"name": "images", "shape": ["batch", *x.shape[1:]],
                                                      "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "classes": classes},
        "normalization": {"scale": 1 / 255, "mean": list(stats.mean), "std": list(stats.std),
                          "formula": "(pixel / 255 - mean) / std, per RGB channel"},
        "arch": metrics["arch"], "arch_id": metrics["arch_id"], "test_acc": metrics["test_acc"],
        "parity": {"images": len(x), "max_abs_diff": diff, "tolerance": TOLERANCE},
    }, path.with_name(path.name + ".json"))
    return Exported(path, fmt, sidecar, diff, len(x))


def _real_inputs(data: str, stats, n: int) -> tuple[torch.Tensor, list[str]]:
    """The first `n` test images, normalised exactly as training and evaluation normalise them."""
    from nas.engine.augment import normalize
    from nas.engine.data import load_split

    test = load_split(data, "test")
    return normalize(test.images[:n], stats), list(test.classes)


def _write_checked(model: torch.nn.Module, x: torch.Tensor, expected: torch.Tensor, path: Path, fmt: str) -> float:
    """Export into a scratch folder, compare its outputs, and only then write the file (atomically)."""
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch) / path.name
        got = _onnx(model, x, tmp) if fmt == "onnx" else _torchscript(model, x, tmp)
        diff = float((got - expected).abs().max())
        limit = TOLERANCE * max(1.0, float(expected.abs().max()))
        if not diff <= limit:
            raise NasError(f"the {fmt} export differs from the PyTorch model by {diff:.2e} on {len(x)} test images "
                           f"(allowed {limit:.2e}): not written; report this with the run's arch.json")
        write_bytes_atomic(tmp.read_bytes(), path)
    return diff


def _onnx_runtime() -> ModuleType:
    """onnxruntime, once onnx and onnxscript (torch's exporter) are importable too: the `export` extra."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError:
        raise NasError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'nas[export]'") from None
    return onnxruntime


def _onnx(model: torch.nn.Module, x: torch.Tensor, path: Path) -> torch.Tensor:
    onnxruntime = _onnx_runtime()
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (x[:2],), str(path), dynamo=True, input_names=["images"], output_names=["logits"],
                      dynamic_shapes={"x": {0: batch}}, external_data=False, verbose=False)  # one self-contained file
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _torchscript(model: torch.nn.Module, x: torch.Tensor, path: Path) -> torch.Tensor:
    # TorchScript is deprecated in favour of torch.export, but it is what LibTorch (C++) and older
    # mobile runtimes load; the warning says nothing the user can act on here
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(model, x[:2]).save(str(path))
        return torch.jit.load(str(path))(x)
