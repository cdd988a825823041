"""The training engine: one function that trains one model under one Recipe, fast and reproducibly.

Design follows airbench: the whole uint8 dataset sits on the device; each batch is gathered,
augmented and normalised in a few batched ops; channels_last; autocast where it pays; the
learning rate is set per step from a pure function of the step (so resume is exact).
Deliberately free of Optuna: the search passes `on_eval`, which may raise to prune.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas.engine.augment import (
    Augment,
    ChannelStats,
    augment_batch,
    channel_stats,
    normalize,
)
from nas.engine.data import ImageSet, stratified_subset
from nas.engine.optimizers import OPTIMIZERS
from nas.engine.precision import resolve_precision, resolved
from nas.engine.recipe import Recipe
from nas.engine.schedules import SCHEDULES
from nas.errors import NasError, note

LOOKAHEAD_K = 5  # fast steps per slow update (Zhang et al. 2019 defaults)
LOOKAHEAD_ALPHA = 0.5
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class EvalPoint:
    epoch: float  # epochs completed, fractional with evals_per_epoch > 1
    train_loss: float  # mean training loss since the previous point
    val_loss: float  # nan when training without a validation set
    val_acc: float  # fraction in [0, 1]; nan without a validation set
    seconds: float  # wall time since training started


@dataclass(frozen=True)
class TrainResult:
    """Outcome of train(). With status "nonfinite" the loss diverged: val_acc is 0.0 and
    train_loss_sum is inf, so no NaN ever reaches a caller's objective; check `status`."""

    status: str  # "ok" | "nonfinite"
    history: tuple[EvalPoint, ...]
    val_acc: float  # at the last evaluation point
    seconds: float  # wall time of the whole call, evaluations included
    images_per_s: float  # training images per second, evaluations excluded
    images_seen: int
    train_loss_sum: float  # sum over epochs of the epoch's mean training loss (ranking signal)
    precision: str  # what the recipe's precision resolved to on this device: fp32, bf16 or fp16, never "auto"


def select_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when torch sees a GPU, else cpu. Asking for an absent device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise NasError(f"device {name!r} is not a torch device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NasError(f"device {name!r} was requested but torch sees no CUDA GPU; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NasError(f"device {name!r} does not exist: {torch.cuda.device_count()} GPU(s) visible; "
                           f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise NasError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


# ---------------------------------------------------------------------------------------------
# precision, optimiser, schedule


class Lookahead:
    """Lookahead (Zhang et al. 2019): every k steps, slow += alpha * (fast - slow); fast = slow.

    `alpha` is a constant or a function of the step; `buffers` (BatchNorm statistics) follow the weights
    too, as in airbench's EMA, whose alpha falls from 1 (no averaging) to 1 - 0.95^5 at the end.
    Duck-types an optimizer (param_groups, step, zero_grad, state_dict) so GradScaler can
    drive it: a step the scaler skips is not counted.
    """

    def __init__(self, base: torch.optim.Optimizer, k: int = LOOKAHEAD_K,
                 alpha: float | Callable[[int], float] = LOOKAHEAD_ALPHA, buffers: tuple[torch.Tensor, ...] = ()) -> None:
        self.base, self.k, self.alpha, self.steps = base, k, alpha, 0
        self.fast = [p for g in base.param_groups for p in g["params"]] + list(buffers)
        self.slow = [p.detach().clone() for p in self.fast]

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    @property
    def state(self):
        return self.base.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None):
        loss = self.base.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            alpha = self.alpha(self.steps) if callable(self.alpha) else self.alpha
            torch._foreach_lerp_(self.slow, self.fast, alpha)  # slow += alpha * (fast - slow)
            torch._foreach_copy_(self.fast, self.slow)
        return loss

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(), "slow": [s.clone() for s in self.slow], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])
        for s, saved in zip(self.slow, state["slow"]):
            s.copy_(saved)
        self.steps = state["steps"]


class CompiledOrEager(nn.Module):
    """torch.compile(model), or the model itself once compiling fails (no C++ compiler, an unsupported op):
    one line says so and the run goes on in eager mode, with the same weights. Compiling is lazy, so the
    failure shows at the first call, not here."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.compiled = model, torch.compile(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as e:  # noqa: BLE001: whatever the compiler raised, eager mode still trains
                note(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                     f"training goes on in eager mode")
                self.compiled = None
        return self.model(x)


def make_optimizer(model: nn.Module, r: Recipe, total_steps: int = 1) -> torch.optim.Optimizer | Lookahead:
    """The recipe's optimiser over the trainable parameters; BatchNorm biases in a group of their own at lr x
    bias_lr_scale (each group's `lr_scale`) and weight decay / bias_lr_scale, so their decay per step is the
    same; wrapped in Lookahead when the recipe asks (airbench's schedule needs `total_steps`)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    fast = {id(m.bias) for m in norms if m.bias is not None and m.bias.requires_grad} if r.bias_lr_scale != 1 else set()
    params: list = [p for p in model.parameters() if p.requires_grad and id(p) not in fast]
    if fast:
        params = [{"params": params, "lr_scale": 1.0},
                  {"params": [m.bias for m in norms if id(m.bias) in fast], "lr_scale": r.bias_lr_scale,
                   "weight_decay": r.weight_decay / r.bias_lr_scale}]
    device_type = next(model.parameters()).device.type
    opt = OPTIMIZERS[r.optimizer].build(params, r.lr, r.momentum, r.nesterov, r.weight_decay, device_type)
    if not r.lookahead:
        return opt
    if r.lookahead_schedule == "airbench":  # decay 0.95^5 (t/T)^3 of the average per update, statistics too
        stats = tuple(b for m in norms for b in (m.running_mean, m.running_var) if b is not None)
        return Lookahead(opt, alpha=lambda step: 1 - 0.95 ** 5 * min(step / total_steps, 1) ** 3, buffers=stats)
    return Lookahead(opt)


class LrSchedule:
    """Multiplier of the peak lr at each step: linear warm-up, then the recipe's schedule (nas.engine.schedules)
    over the rest; for a schedule that follows the loss (plateau), times the cuts `observe` made, the small
    state a checkpoint keeps."""

    PLATEAU_FACTOR = 0.1

    def __init__(self, r: Recipe, steps_per_epoch: int) -> None:
        self.schedule = SCHEDULES[r.schedule]
        self.total = r.epochs * steps_per_epoch
        self.warmup = round(r.warmup_epochs * steps_per_epoch)
        # ReduceLROnPlateau's patience of 10 epochs at 200 epochs, scaled to shorter runs
        self.patience = max(1, r.epochs // 20) * r.evals_per_epoch
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.total - self.warmup)  # in [0, 1)
        return self.schedule.shape(t) * self.scale

    def observe(self, loss: float) -> None:
        """Feed an evaluation loss; a loss-following schedule cuts the lr after `patience` points without a
        0.01% gain."""
        if not self.schedule.follows_loss:
            return
        if loss < self.best * (1 - 1e-4):
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale, self.bad = self.scale * self.PLATEAU_FACTOR, 0

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad = state["scale"], state["best"], state["bad"]


@torch.no_grad()
def whiten_stem(model: nn.Module, images: torch.Tensor, stats: ChannelStats, samples: int = 5000,
                eps: float = 5e-4) -> None:
    """Set the first conv's filters to the whitening of the training images' patches and freeze it.

    airbench's largest single saving (34 -> 21 epochs to 94%): the first layer starts as a
    decorrelating filter bank instead of noise, so the network needs fewer epochs to learn it. Each
    of the top C/2 eigenvectors of the patch covariance, scaled by 1/sqrt(eigenvalue), becomes a filter
    and its negation another (the ReLU after it keeps both halves); filters beyond twice the patch size
    keep their random initialisation. Frozen: the optimiser never sees the conv (no decay either).
    """
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    c_out, c_in, k, _ = conv.weight.shape
    x = normalize(images[:samples].to(conv.weight.device), stats)
    patches = F.unfold(x, k).transpose(1, 2).reshape(-1, c_in * k * k).double()
    patches = patches - patches.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))  # ascending
    filters = eigenvectors.flip(1).T / (eigenvalues.flip(0)[:, None] + eps).sqrt()  # largest variance first
    top = filters[:min(c_out // 2, len(filters))]
    filters = torch.cat([top, -top]).reshape(-1, c_in, k, k)
    conv.weight[:len(filters)] = filters.to(conv.weight.dtype)
    conv.weight.requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# evaluation


@dataclass(frozen=True)
class Evaluation:
    acc: float
    loss: float  # mean cross-entropy
    per_class: list[float]  # accuracy per class; nan for a class absent from the data
    confusion: list[list[int]]  # [true class][predicted class] -> images


def _tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    if not level:
        return model(x).float()
    pair = lambda v: (model(v).float() + model(v.flip(3)).float()) / 2  # noqa: E731
    logits = pair(x)
    if level < 2:
        return logits
    side = x.shape[-1]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = (pair(padded[:, :, :side, :side]) + pair(padded[:, :, 2:, 2:])) / 2
    return (logits + shifted) / 2


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 1024, tta: int = 0,
             *, stats: ChannelStats | None = None, amp_dtype: torch.dtype | None = None) -> Evaluation:
    """Accuracy, loss, per-class accuracy and confusion matrix on `data`. tta 1 averages each image's logits
    with its mirror's; 2 (airbench) weighs that pair 1/2 and the pairs shifted 1 pixel up-left and down-right
    (reflect-padded) 1/4 each (Recipe.tta_level).

    `stats` must be the training set's statistics (`channel_stats(train_set)`); the default
    computes them from `data`, which is exact for CIFAR-10 (published constants) only.
    """
    stats = stats or channel_stats(data)
    was_training = model.training
    model.eval()
    n_classes = len(data.classes)
    confusion = torch.zeros(n_classes * n_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
    try:
        for start in range(0, len(data), batch_size):
            x = data.images[start:start + batch_size].to(device, non_blocking=True)
            y = data.labels[start:start + batch_size].to(device, non_blocking=True)
            x = normalize(x, stats).contiguous(memory_format=torch.channels_last)
            with ctx:
                logits = _tta_logits(model, x, tta)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            confusion += torch.bincount(y * n_classes + logits.argmax(1), minlength=n_classes * n_classes)
    finally:
        model.train(was_training)
    matrix = confusion.view(n_classes, n_classes).double()
    per_class = (matrix.diagonal() / matrix.sum(1)).tolist()
    return Evaluation(float(matrix.trace() / matrix.sum()), float(loss_sum) / len(data), per_class,
                      confusion.view(n_classes, n_classes).tolist())


# ---------------------------------------------------------------------------------------------
# training


def train(model: nn.Module, recipe: Recipe, train_set: ImageSet, val_set: ImageSet | None, device: torch.device,
          on_eval: Callable[[EvalPoint], None] | None = None, checkpoint_dir: Path | None = None,
          progress: bool = False) -> TrainResult:
    """Train `model` in place on `train_set` and validate on `val_set` at every evaluation point.

    `on_eval` may raise (e.g. optuna.TrialPruned); the exception propagates unchanged. With
    `checkpoint_dir`, state is saved after every epoch and a run there resumes from the latest.
    `progress` shows the run on stderr: a bar on a terminal, else a plain line per epoch.
    """
    started = time.perf_counter()
    if recipe.keep_best and val_set is None:
        raise NasError("keep_best needs a validation split to choose the best weights by: carve one out with "
                       "--val-size N, or set keep_best false")
    run = _prepare(model, recipe, train_set, val_set, device)
    st = _State()
    if checkpoint_dir is not None:
        _resume(Path(checkpoint_dir), recipe, run, st)
    with _Progress(progress, recipe, run.steps_per_epoch, st, started) as shown:
        for epoch in range(st.epoch, recipe.epochs):
            if not _epoch(run, recipe, epoch, st, started, on_eval, shown):
                return _result("nonfinite", st, started, run.precision)
            if checkpoint_dir is not None:
                _save(Path(checkpoint_dir), recipe, run, st, started)
    if st.best_weights is not None:  # keep_best: the run ends with its best validation point's weights
        run.model.load_state_dict(st.best_weights)
    return _result("ok", st, started, run.precision)


@dataclass(frozen=True)
class _Run:
    """What every step of one training run uses, set up once."""

    net: nn.Module  # the model, compiled when the recipe asks
    model: nn.Module
    opt: torch.optim.Optimizer | Lookahead
    schedule: LrSchedule
    scaler: torch.amp.GradScaler | None
    gen: torch.Generator  # data order and augmentation
    aug: Augment
    stats: ChannelStats  # of the full training split: the normalisation at training and evaluation
    images: torch.Tensor  # uint8, resident on the device
    labels: torch.Tensor
    val: ImageSet | None
    device: torch.device
    amp_dtype: torch.dtype | None
    precision: str  # resolved: fp32, bf16 or fp16
    batch_dtype: torch.dtype
    autocast: Callable
    steps_per_epoch: int
    ends: tuple[int, ...]  # steps of an epoch after which to evaluate
    tta: int  # evaluate's level: 0 none, 1 flip, 2 flip and translate
    keep_best: bool
    flips: torch.Tensor | None  # alternate_flip: the first epoch's mirror choice per image


def _prepare(model: nn.Module, r: Recipe, train_set: ImageSet, val_set: ImageSet | None,
             device: torch.device) -> _Run:
    stats = channel_stats(train_set)  # from the full training split, before any subset
    if r.train_subset:
        if r.train_subset > len(train_set):
            raise NasError(f"train_subset={r.train_subset} exceeds the {len(train_set)} training images; "
                           f"lower it (--train-subset), or use 0 for the whole split")
        train_set = stratified_subset(train_set, r.train_subset, r.seed)
    if len(train_set) < r.batch_size:
        raise NasError(f"batch_size={r.batch_size} is larger than the {len(train_set)} training images; lower "
                       f"--batch-size (or batch_size in the space's train: section) or train on more images")
    precision = resolved(r.precision, device)
    amp_dtype, use_scaler = resolve_precision(precision, device)

    torch.manual_seed(r.seed)  # for any randomness inside the model (dropout)
    model.to(device)
    if r.whiten:
        whiten_stem(model, train_set.images, stats)
    if r.channels_last:
        model.to(memory_format=torch.channels_last)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = r.bn_momentum
            if r.bn_weight_frozen and m.weight is not None:
                m.weight.requires_grad_(False)
    net = CompiledOrEager(model) if r.compile else model
    steps_per_epoch = len(train_set) // r.batch_size  # the incomplete last batch is dropped; order changes
    opt = make_optimizer(model, r, r.epochs * steps_per_epoch)
    schedule = LrSchedule(r, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None  # CUDA-only path
    gen = torch.Generator(device=device).manual_seed(r.seed)
    # alternating flip: which images the first epoch mirrors, drawn once; every odd epoch mirrors the others
    flips = torch.randint(2, (len(train_set),), generator=gen, device=device).bool() if r.alternate_flip else None
    ends = sorted({max(1, round(k * steps_per_epoch / r.evals_per_epoch)) for k in range(1, r.evals_per_epoch + 1)})
    val = None if val_set is None else ImageSet(val_set.images.to(device), val_set.labels.to(device),
                                                val_set.classes)
    # the first conv takes the batch in the autocast dtype directly, halving augmentation traffic
    batch_dtype = amp_dtype if device.type == "cuda" and amp_dtype else torch.float32
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    return _Run(net, model, opt, schedule, scaler, gen, Augment.from_recipe(r), stats,
                train_set.images.to(device, non_blocking=True), train_set.labels.to(device, non_blocking=True),
                val, device, amp_dtype, precision, batch_dtype, autocast, steps_per_epoch, tuple(ends), r.tta_level,
                r.keep_best, flips)


def _epoch(run: _Run, r: Recipe, epoch: int, st: _State, started: float,
           on_eval: Callable[[EvalPoint], None] | None, shown: _Progress) -> bool:
    """Train one epoch, updating `st`; False as soon as the loss is not finite."""
    t_epoch, trained = time.perf_counter(), st.train_seconds
    order = torch.randperm(len(run.labels), generator=run.gen, device=run.device)
    window_loss, window_steps, epoch_loss = torch.zeros((), device=run.device), 0, 0.0
    for step in range(run.steps_per_epoch):
        index = order[step * r.batch_size:(step + 1) * r.batch_size]
        mirror = None if run.flips is None else run.flips[index] ^ bool(epoch % 2)
        x = augment_batch(run.images[index], run.aug, run.stats, run.gen, run.batch_dtype, mirror)
        factor = run.schedule.factor(epoch * run.steps_per_epoch + step)
        for g in run.opt.param_groups:
            g["lr"] = r.lr * g.get("lr_scale", 1.0) * factor
        window_loss += _step(run.net, run.model, run.opt, run.scaler, run.autocast, x, run.labels[index], r)
        window_steps += 1
        st.images_seen += r.batch_size
        shown.step(epoch, step)
        at_eval = step + 1 in run.ends
        # The loss is summed on the device. On CPU it is computed already, so reading it every step is free and
        # stops a diverged run at once; on CUDA a read waits for the GPU's queue to drain, idling it while the
        # next step's kernels are launched, so it is read once per evaluation point.
        if not at_eval and run.device.type != "cpu":
            continue
        window_sum = float(window_loss)
        if not math.isfinite(window_sum):
            st.train_seconds += time.perf_counter() - t_epoch
            return False
        if not at_eval:
            continue
        mean_loss = window_sum / window_steps
        epoch_loss += mean_loss * window_steps / run.steps_per_epoch
        st.train_seconds += time.perf_counter() - t_epoch
        point = _evaluation(run, epoch + (step + 1) / run.steps_per_epoch, mean_loss, st, started)
        if point is None:
            return False
        t_epoch = time.perf_counter()
        shown.evaluated(point)
        window_loss, window_steps = torch.zeros((), device=run.device), 0
        if on_eval is not None:
            on_eval(point)  # may raise to prune: nothing below needs cleaning up
    st.train_seconds += time.perf_counter() - t_epoch
    st.loss_sum += epoch_loss
    st.epoch = epoch + 1
    shown.epoch_done(epoch_loss, run.steps_per_epoch * r.batch_size / max(st.train_seconds - trained, 1e-9))
    return True


def _evaluation(run: _Run, epoch: float, mean_loss: float, st: _State, started: float) -> EvalPoint | None:
    """Validate, record the point and feed the schedule; None when the validation loss is not finite."""
    if run.val is not None:
        e = evaluate(run.net, run.val, run.device, tta=run.tta, stats=run.stats, amp_dtype=run.amp_dtype)
        val_acc, val_loss = e.acc, e.loss
        if not math.isfinite(val_loss):  # e.g. BatchNorm running statistics overflowed
            return None
    else:
        val_acc = val_loss = math.nan
    point = EvalPoint(epoch, mean_loss, val_loss, val_acc, time.perf_counter() - started + st.prior_seconds)
    st.history.append(point)
    if run.keep_best and (st.best_weights is None or val_acc > max(p.val_acc for p in st.history[:-1])):
        st.best_weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    run.schedule.observe(val_loss if run.val is not None else mean_loss)
    return point


class _Progress:
    """What progress=True shows on stderr: a rich bar on a terminal; elsewhere (nohup, SLURM, CI, a
    pipe) a plain line per epoch, and one every LINE_EVERY_S seconds inside a longer epoch, so a
    log shows the run is alive. Silent with progress=False."""

    LINE_EVERY_S = 60.0

    def __init__(self, enabled: bool, r: Recipe, steps_per_epoch: int, st: _State, started: float) -> None:
        self.lines = enabled and not sys.stderr.isatty()
        self.bar = _progress_bar() if enabled and not self.lines else None
        self.epochs, self.steps, self.st, self.started = r.epochs, steps_per_epoch, st, started
        self.last_line = time.perf_counter()
        self.task = self.bar.add_task("training", total=r.epochs * steps_per_epoch,
                                      completed=st.epoch * steps_per_epoch) if self.bar else None

    def __enter__(self) -> _Progress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()

    def step(self, epoch: int, step: int) -> None:
        if self.bar:
            self.bar.advance(self.task)
        elif self.lines and time.perf_counter() - self.last_line >= self.LINE_EVERY_S:
            self._line(f"epoch {epoch + 1}/{self.epochs}: step {step + 1}/{self.steps}")

    def evaluated(self, point: EvalPoint) -> None:
        if self.bar:  # without a validation set (retrain's default) there is nothing to say about it
            val = "" if math.isnan(point.val_acc) else f" val {point.val_acc:.2%}"
            self.bar.update(self.task, description=f"epoch {point.epoch:.2f} loss {point.train_loss:.3f}{val}")

    def epoch_done(self, train_loss: float, images_per_s: float) -> None:
        if self.lines:
            val_acc = self.st.history[-1].val_acc if self.st.history else math.nan
            val = "" if math.isnan(val_acc) else f", val acc {val_acc:.2%}"
            self._line(f"epoch {self.st.epoch}/{self.epochs}: train loss {train_loss:.4f}{val}, "
                       f"{images_per_s:,.0f} images/s")

    def _line(self, text: str) -> None:
        elapsed = datetime.timedelta(seconds=round(time.perf_counter() - self.started + self.st.prior_seconds))
        note(f"{text}, {elapsed} elapsed")
        self.last_line = time.perf_counter()


def _step(net: nn.Module, model: nn.Module, opt, scaler, autocast, x: torch.Tensor, y: torch.Tensor,
          r: Recipe) -> torch.Tensor:
    """One optimiser step; returns the detached loss (no device sync)."""
    with autocast():
        loss = F.cross_entropy(net(x), y, label_smoothing=r.label_smoothing)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:  # CUDA-only path (fp16): scale, unscale before clipping, skip inf steps
        scaler.scale(loss).backward()
        if r.grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        if r.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
    return loss.detach().float()


@dataclass
class _State:
    """Everything the loop accumulates that a checkpoint must carry."""

    epoch: int = 0
    images_seen: int = 0
    loss_sum: float = 0.0
    train_seconds: float = 0.0
    prior_seconds: float = 0.0  # wall time spent before a resume
    history: list[EvalPoint] = dataclasses.field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = None  # keep_best: the best validation point's weights


def _result(status: str, st: _State, started: float, precision: str) -> TrainResult:
    seconds = time.perf_counter() - started + st.prior_seconds
    ips = st.images_seen / st.train_seconds if st.train_seconds > 0 else 0.0
    if status != "ok":
        return TrainResult(status, tuple(st.history), 0.0, seconds, ips, st.images_seen, math.inf, precision)
    val_acc = st.history[-1].val_acc if st.history else math.nan
    if st.best_weights is not None:  # keep_best: the score of the weights the run ends with
        val_acc = max(p.val_acc for p in st.history)
    return TrainResult(status, tuple(st.history), val_acc, seconds, ips, st.images_seen, st.loss_sum, precision)


def _progress_bar():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    # stderr, so `--json` output on stdout stays one clean object
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


# ---------------------------------------------------------------------------------------------
# checkpoints: saved after every epoch; a resumed CPU run ends with bit-identical weights


def _save(directory: Path, r: Recipe, run: _Run, st: _State, started: float) -> None:
    from nas.engine.checkpoint import capture_rng, save_checkpoint

    state = {
        "version": CHECKPOINT_VERSION,
        "recipe": r.to_dict(),
        "epoch": st.epoch,
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "schedule": run.schedule.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "generator": run.gen.get_state(),
        "rng": capture_rng(),
        "images_seen": st.images_seen,
        "loss_sum": st.loss_sum,
        "train_seconds": st.train_seconds,
        "seconds": time.perf_counter() - started + st.prior_seconds,
        "history": [dataclasses.astuple(p) for p in st.history],
        "best_weights": st.best_weights,
    }
    save_checkpoint(state, directory, st.epoch)


def _stored_recipe(data) -> Recipe | None:
    """A checkpoint's recipe; one saved before fields were added gets their defaults, as it trained with them."""
    try:
        return Recipe.from_dict(data)
    except (NasError, TypeError):
        return None


def _resume(directory: Path, r: Recipe, run: _Run, st: _State) -> None:
    from nas.engine.checkpoint import load_latest_checkpoint, restore_rng

    state = load_latest_checkpoint(directory)
    if state is None:
        return
    if state.get("version") != CHECKPOINT_VERSION or _stored_recipe(state.get("recipe")) != r:
        raise NasError(f"the checkpoint in {directory} was written by a different recipe or engine version; "
                       f"resume with the same recipe, or use an empty checkpoint directory")
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.schedule.load_state_dict(state["schedule"])
    if run.scaler is not None and state["scaler"] is not None:
        run.scaler.load_state_dict(state["scaler"])  # CUDA-only path
    run.gen.set_state(state["generator"])
    restore_rng(state["rng"])
    st.epoch, st.images_seen, st.loss_sum = state["epoch"], state["images_seen"], state["loss_sum"]
    st.train_seconds, st.prior_seconds = state["train_seconds"], state["seconds"]
    st.history = [EvalPoint(*p) for p in state["history"]]
    st.best_weights = state.get("best_weights")
