"""Deployment: `nas export` writes a checked ONNX or TorchScript file of a retrained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nas.cli.app import Json, command, out, print_json


@command
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder of `nas retrain` (holds metrics.json and model.safetensors).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx | torchscript.")] = "onnx",
    out_file: Annotated[Optional[Path], typer.Option("--out", help="File to write. (default: RUN_DIR/model.onnx or model.pt)", show_default=False)] = None,
    data: Annotated[Optional[str], typer.Option(help="Data whose test images check the export. (default: the run's)")] = None,
    images: Annotated[int, typer.Option(help="Test images the export is checked on.")] = 256,
    as_json: Json = False,
) -> None:
    """Export a retrained model; its outputs are checked against PyTorch's on real test images before the
    file is written, and OUT.json beside it records the input normalisation the model expects."""
    from nas.export import export as run_export

    e = run_export(run_dir, fmt, out_file, data, images)
    if as_json:
        print_json({"path": str(e.path), "format": e.format, "sidecar": str(e.sidecar), "max_abs_diff": e.max_abs_diff,
                    "images": e.images})
        return
    out.print(f"{e.format} model written to {e.path}: outputs match PyTorch's within {e.max_abs_diff:.1e} on {e.images} "
              f"test images; input normalisation in {e.sidecar}")
