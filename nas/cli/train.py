"""Train or time one architecture: `nas train`, `nas bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from nas.arch import Arch
from nas.arch.counting import count_params
from nas.cli.app import Data, Device, Json, Protocol, out, print_json
from nas.cli.archflags import arch_command
from nas.errors import NasError


@arch_command
def train(
    arch: Arch,
    data: Data = "cifar10",
    val_size: Annotated[int, typer.Option("--val-size", help="Training images held out for validation (stratified, seed 0); 0 = none.")] = 5000,
    protocol: Protocol = "reference",
    epochs: Annotated[Optional[int], typer.Option(help="Epochs. (default: the protocol's)")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per step. (default: the protocol's)")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate. (default: the protocol's)")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto | fp32 | bf16 | fp16. (default: auto)")] = None,
    train_subset: Annotated[Optional[int], typer.Option("--train-subset", help="Train on a stratified subset of this many images. (default: all)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for init, data order and augmentation. (default: 0)")] = None,
    settings: Annotated[Optional[list[str]], typer.Option("--set", help="Any recipe field as key=value, repeatable: --set schedule=onecycle --set lookahead=true.")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir", help="Save every epoch here; rerunning resumes from the latest.")] = None,
    eval_split: Annotated[str, typer.Option("--eval", help="val: report validation accuracy | test: also score once on the test split (final numbers only).")] = "val",
    device: Device = "auto",
    as_json: Json = False,
) -> None:
    """Train one architecture with one recipe and report validation accuracy (test accuracy with --eval test)."""
    from nas.api import train_architecture
    from nas.engine.recipe import parse_overrides

    if eval_split not in ("val", "test"):
        raise NasError(f"--eval={eval_split!r} is unknown: choose val or test")
    flags = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "precision": precision,
                               "train_subset": train_subset, "seed": seed}.items() if v is not None}
    s = train_architecture(arch, data, val_size=val_size, test=eval_split == "test", device=device,
                           checkpoint_dir=checkpoint_dir, progress=True, protocol=protocol,
                           **{**parse_overrides(settings or []), **flags})
    if as_json:
        print_json(s)
        return
    validated = s["val_images"] > 0  # --val-size 0: no validation, so nothing is said about it (not "nan%")
    val_images = f"{s['val_images']:,} val" if validated else "no validation"
    table = Table(title=f"{arch.describe()} on {data} ({s['train_images']:,} train, {val_images})", title_justify="left")
    for col in ("epoch", "train loss", *(("val loss", "val acc") if validated else ()), "seconds"):
        table.add_column(col, justify="right")
    for p in s["history"]:
        val = (f"{p['val_loss']:.4f}", f"{p['val_acc']:.2%}") if validated else ()
        table.add_row(f"{p['epoch']:.2f}", f"{p['train_loss']:.4f}", *val, f"{p['seconds']:.1f}")
    out.print(table)
    if s["status"] != "ok":
        raise NasError(f"training diverged (non-finite loss) after {s['images_seen']:,} images with "
                       f"lr={s['recipe']['lr']:g}; lower --lr or add warm-up (--set warmup_epochs=1)")
    scores = [f"val acc {s['val_acc']:.2%}"] if validated else []
    if "test_acc" in s:
        scores.append(f"test acc {s['test_acc']:.2%} on {s['test_images']:,} images")
    out.print("; ".join([*scores, f"{s['images_per_s']:,.0f} images/s on {s['device']} in {s['precision']}",
                         f"{s['seconds']:.1f} s"]))


@arch_command
def bench(
    arch: Arch,
    data: Data = "cifar10",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per step, both sides.")] = 128,
    steps: Annotated[int, typer.Option(help="Timed steps per round and side.")] = 10,
    rounds: Annotated[int, typer.Option(help="Alternating rounds; medians are reported.")] = 3,
    precision: Annotated[str, typer.Option(help="Engine precision: auto | fp32 | bf16 | fp16 (the standard recipe is always fp32).")] = "auto",
    device: Device = "auto",
    latency: Annotated[bool, typer.Option("--latency", help="Measure inference latency instead (batch 1 and --batch-size; no data read).")] = False,
    as_json: Json = False,
) -> None:
    """Training images/s of this engine vs the standard recipe (PIL + DataLoader, fp32), and FLOP/s vs matmul
    peak; with --latency, inference latency (median and 10th-90th percentile, warm-up excluded)."""
    import dataclasses

    if latency:
        return _latency(arch, batch_size, device, as_json)

    from nas.api import bench_architecture

    r = bench_architecture(arch, data, batch_size=batch_size, steps=steps, rounds=rounds, precision=precision,
                           device=device)
    if as_json:
        print_json({**dataclasses.asdict(r), "arch": arch.to_dict(), "params": count_params(arch)})
        return
    table = Table(title=f"{arch.describe()} on {r.device}, batch {r.batch_size}, {r.rounds} rounds x {r.steps} steps",
                  title_justify="left")
    for col in ("pipeline", "images/s (median)", "rounds"):
        table.add_column(col, justify="left" if col == "pipeline" else "right")
    table.add_row(f"nas engine ({r.precision})", f"{r.images_per_s:,.1f}", " ".join(f"{x:.0f}" for x in r.engine_samples))
    table.add_row("standard recipe (fp32)", f"{r.baseline_images_per_s:,.1f}", " ".join(f"{x:.0f}" for x in r.baseline_samples))
    out.print(table)
    out.print(f"speedup {r.speedup:.2f}x; engine {r.achieved_flops / 1e9:,.1f} GFLOP/s = {r.peak_fraction:.0%} of the "
              f"measured {r.precision} peak {r.peak_flops / 1e9:,.0f} GFLOP/s ({r.train_flops_per_image / 1e9:.2f} GFLOP "
              f"per image)" + (f"; oneDNN conv kernel {r.conv_kernel}" if r.conv_kernel else ""))
    out.print("timings on a shared machine are noisy: compare medians, and rerun when the machine is idle", style="dim")


def _latency(arch: Arch, batch_size: int, device: str, as_json: bool) -> None:
    from nas.arch.model import build_model
    from nas.engine.latency import measure_latency
    from nas.engine.train import select_device

    dev, model = select_device(device), build_model(arch)
    rows = [measure_latency(model, dev, b, arch.input_size, arch.in_channels) for b in sorted({1, batch_size})]
    if as_json:
        print_json({"arch": arch.to_dict(), "params": count_params(arch), "device": str(dev),
                    "latency": [{**r.__dict__, "images_per_s": r.images_per_s} for r in rows]})
        return
    table = Table(title=f"{arch.describe()}: inference on {dev}, fp32, eval mode", title_justify="left")
    for col in ("batch", "median ms", "p10-p90 ms", "images/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.batch), f"{r.median_ms:.2f}", f"{r.p10_ms:.2f}-{r.p90_ms:.2f}", f"{r.images_per_s:,.0f}")
    out.print(table)
