"""The training loop: batch-1 samples, gradient accumulation, Adam + cyclic LR, validation,
best-model selection, and checkpoints that make an interrupted run resumable bit-exactly.

Step bookkeeping: ``step`` counts optimizer steps, ``micro`` the samples already accumulated
towards the next one, ``epoch``/``epoch_pos`` where this rank is in its epoch order. Everything
that decides what happens next is in :class:`Progress` and the saved RNG states, nothing else.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from implicity.core.errors import CancelledError, InputError
from implicity.core.outputs import atomic_path, write_text_atomic

from . import checkpointing as ckpt
from .averaging import WeightAverage
from .config import TrainConfig
from .distributed import (
    DistContext,
    any_rank,
    barrier,
    broadcast_from_main,
    gather_to_all,
    mean_across_ranks,
    rank_device,
)
from .feeding import iterate_samples, iterate_validation, rank_epoch_order, to_device
from .logs import RunLogger
from .loss import column_height_loss, column_queries, monotone_penalty, raised_queries, weighted_bce_with_logits
from .parameters import freeze_parameters, optimizer_state_for
from .validation import ValidationResult, evaluate

RESUME_FILE = "last.ckpt"
BEST_FILE = "best.pt"
FINAL_FILE = "final.pt"
SUMMARY_FILE = "run_summary.json"


def snapshot_name(step: int) -> str:
    """The file ``schedule.snapshot_every`` writes at ``step``: the network as best.pt holds it."""
    return f"step{step}.pt"

ExportFn = Callable[[Path, torch.nn.Module, Any, dict[str, Any]], None]


@dataclass
class Progress:
    """Where the run is; saved in every resume checkpoint."""

    step: int = 0
    micro: int = 0
    epoch: int = 0
    epoch_pos: int = 0
    samples: int = 0
    wall_time_s: float = 0.0
    best_score: float = -math.inf
    best_step: int | None = None
    best_metrics: dict[str, Any] | None = None
    last_metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def _export_with_core_model(path: Path, model: torch.nn.Module, model_config: Any, metadata: dict[str, Any]) -> None:
    """Write ``model`` in the network's checkpoint format (what the reconstruction engine loads)."""
    from implicity.core.model import save_checkpoint

    save_checkpoint(path, model, model_config, training=metadata)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python so model initialisation is reproducible."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


class Trainer:
    """Trains one model on one dataset as described by a :class:`TrainConfig`."""

    def __init__(self, config: TrainConfig, model: torch.nn.Module, model_config: Any, train_data: Any,
                 val_data: Any | None, ctx: DistContext | None = None, progress_bar: bool = True,
                 tensorboard: bool = True, export_fn: ExportFn | None = None,
                 lineage: list[dict[str, Any]] | None = None) -> None:
        self.config = config
        # what the init_from checkpoints had seen (training/provenance.py); [] from random weights
        self.lineage = lineage if lineage is not None else ([] if not config.init_from else None)
        self.ctx = ctx or DistContext(device=rank_device(config.device))
        self.device = self.ctx.device
        self.model_config = model_config
        self.train_data = train_data
        self.val_data = val_data
        self.export_fn = export_fn or _export_with_core_model
        self.out_dir = Path(config.out_dir)
        if len(train_data) == 0:
            raise InputError(f"{config.source}: the training split '{config.data.train_split}' of "
                             f"{config.data.root} has no patches. Prepare training data first.")
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.module = model.to(self.device)
        if config.optim.freeze:  # before DDP, which registers the parameters that take gradients
            frozen = freeze_parameters(self.module, config.optim.freeze, config.source)
            if self.ctx.is_main:
                print(f"optim.freeze: {frozen} tensors kept fixed ({', '.join(config.optim.freeze)})", file=sys.stderr)
        self.average = WeightAverage(self.module, config.optim.ema_decay) if config.optim.ema_decay else None
        self.net: torch.nn.Module = self.module
        if self.ctx.enabled:
            self.net = DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        world = self.ctx.world_size
        self.accumulate = max(1, round(config.optim.accumulate / world))
        if self.accumulate * world != config.optim.accumulate and self.ctx.is_main:
            print(f"note: optim.accumulate {config.optim.accumulate} is not a multiple of {world} processes; "
                  f"using {self.accumulate} per process ({self.accumulate * world} samples per step).",
                  file=sys.stderr)
        o = config.optim
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=o.lr_base, betas=o.betas, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CyclicLR(
            self.optimizer, base_lr=o.lr_base, max_lr=o.lr_max, step_size_up=o.step_size_up,
            step_size_down=o.step_size_down, mode=o.lr_mode, cycle_momentum=False)
        self.amp = bool(config.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.progress = Progress()
        self._group_loss = 0.0
        self._stop_signal: str | None = None
        self._progress_bar = progress_bar
        self._tensorboard = tensorboard
        self._clock = time.monotonic()

    # ------------------------------------------------------------------ resume state
    def _resume_path(self) -> Path:
        return self.out_dir / RESUME_FILE

    def state_dict(self) -> dict[str, Any]:
        """The resume checkpoint of this moment (collective call in DDP: every rank must call it)."""
        self._account_time()
        rank_state = {"rng": ckpt.capture_rng_state(), "grads": ckpt.capture_gradients(self.module),
                      "group_loss": self._group_loss}
        return {
            "model": self.module.state_dict(),
            "ema": self.average.state_dict() if self.average is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": dataclasses.asdict(self.progress),
            "ranks": gather_to_all(rank_state, self.ctx),
            "world_size": self.ctx.world_size,
            "config": self.config.to_dict(),
            "lineage": self.lineage,
        }

    def save_resume_checkpoint(self) -> Path:
        state = self.state_dict()
        path = self._resume_path()
        if self.ctx.is_main:
            ckpt.save_train_state(path, state)
        barrier(self.ctx)
        return path

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a resume checkpoint: weights, optimizer, LR, scaler, position, RNGs, gradients."""
        self.module.load_state_dict(state["model"])
        if self.average is not None:
            if state.get("ema") is not None:
                self.average.load_state_dict(state["ema"])
            else:
                self.average = WeightAverage(self.module, self.average.decay)
                if self.ctx.is_main:
                    print(f"note: {self._resume_path()} holds no averaged weights; optim.ema_decay averages "
                          f"from its step {state['progress']['step']} on.", file=sys.stderr)
        self.optimizer.load_state_dict(optimizer_state_for(state["optimizer"], self.module, self.optimizer,
                                                           str(self._resume_path())))
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.progress = Progress(**state["progress"])
        self.lineage = state.get("lineage", self.lineage)
        ranks = state["ranks"]
        if len(ranks) != self.ctx.world_size and self.ctx.is_main:
            print(f"warning: the checkpoint was written by {len(ranks)} process(es), this run has "
                  f"{self.ctx.world_size}; training continues but not bit-exactly.", file=sys.stderr)
        mine = ranks[self.ctx.rank] if len(ranks) == self.ctx.world_size else ranks[0]
        ckpt.restore_rng_state(mine["rng"])
        ckpt.restore_gradients(self.module, mine["grads"] if len(ranks) == self.ctx.world_size else None)
        self._group_loss = float(mine["group_loss"]) if len(ranks) == self.ctx.world_size else 0.0
        if len(ranks) != self.ctx.world_size:
            self.progress.micro = 0
        self._warn_config_changes(state.get("config", {}))

    def _warn_config_changes(self, saved: dict[str, Any]) -> None:
        harmless = {"source", "device", "out_dir", "schedule", "data.num_workers", "validation"}
        now = self.config.to_dict()
        # An option missing from a checkpoint written before it existed had its default's effect.
        default = type(self.config)().to_dict()
        changed = []
        for key in sorted(set(saved) | set(now)):
            if key in harmless:
                continue
            a, b = saved.get(key, default.get(key)), now.get(key)
            if isinstance(a, dict) and isinstance(b, dict):
                base = default.get(key) or {}
                changed += [f"{key}.{k}" for k in sorted(set(a) | set(b))
                            if a.get(k, base.get(k)) != b.get(k) and f"{key}.{k}" not in harmless]
            elif a != b:
                changed.append(key)
        if changed and self.ctx.is_main:
            print("warning: resuming with changed option(s) " + ", ".join(changed)
                  + "; the result will differ from an uninterrupted run.", file=sys.stderr)

    def resume(self) -> None:
        self.load_state_dict(ckpt.load_train_state(self._resume_path()))

    # ------------------------------------------------------------------ one sample, one step
    def _micro_step(self, batch: dict[str, Any]) -> None:
        batch = to_device(batch, self.device)
        sync = self.progress.micro + 1 >= self.accumulate
        no_sync = self.net.no_sync() if (self.ctx.enabled and not sync) else contextlib.nullcontext()
        with no_sync:
            lc = self.config.loss
            columned = lc.height_weight > 0 and (lc.height_sources is None
                                                 or bool(set(batch.get("source_keys", ())) & set(lc.height_sources)))
            z_std = float(batch["normalizer"]["z_std"]) if lc.monotone_weight > 0 or columned else 1.0
            parts = [batch["query"]]  # extra queries are decoded in the same call (DDP sees one forward)
            if lc.monotone_weight > 0:  # each query and one above it
                parts.append(raised_queries(batch["query"], lc.monotone_dz_m[0] / z_std, lc.monotone_dz_m[1] / z_std))
            if columned:  # vertical columns over random valid pixels of the reference DSM
                columns = column_queries(batch["dsm"], lc.height_columns, lc.height_samples, lc.height_range_m / z_std,
                                         lc.height_jitter)
                parts.append(columns[0])
            with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.net(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0], batch["points"],
                                  batch.get("images"))
            decoded = list(logits.split([part.shape[1] for part in parts], dim=1))
            logits = decoded.pop(0)
            weight = batch.get("weight") if lc.use_weights else None
            loss = weighted_bce_with_logits(logits, batch["occupancy"], weight, lc.reduction)
            if lc.monotone_weight > 0:
                loss = loss + lc.monotone_weight * monotone_penalty(logits, decoded.pop(0), batch.get("weight"))
            if columned:
                loss = loss + lc.height_weight * column_height_loss(decoded.pop(0), *columns[1:], z_std)
            self.scaler.scale(loss / self.accumulate).backward()
        self._group_loss += float(loss.detach())
        self.progress.micro += 1
        self.progress.epoch_pos += 1
        self.progress.samples += self.ctx.world_size

    def _optimizer_step(self) -> float:
        clip = self.config.optim.grad_clip
        if clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        loss = mean_across_ranks(self._group_loss / self.accumulate, self.ctx)
        self._group_loss = 0.0
        self.progress.micro = 0
        self.progress.step += 1
        if self.average is not None:
            self.average.update(self.module, self.progress.step)
        return loss

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights that validation scores and the exports hold: the average (``optim.ema_decay``)
        or the trained ones."""
        return self.average.module if self.average is not None else self.module

    # ------------------------------------------------------------------ validation and exports
    def validate(self) -> ValidationResult | None:
        """Validation metrics of the current weights (main rank computes, every rank receives)."""
        if self.val_data is None or len(self.val_data) == 0:
            return None
        result = None
        if self.ctx.is_main:
            rng = ckpt.capture_rng_state()      # validation must not shift the training RNG streams
            try:
                result = evaluate(self.evaluated, iterate_validation(self.val_data, self.config.data.max_val_patches,
                                                                  self.device),
                                  self.config.validation, self.device, self.config.loss.reduction)
            finally:
                ckpt.restore_rng_state(rng)
        return broadcast_from_main(result, self.ctx)

    def _account_time(self) -> None:
        now = time.monotonic()
        self.progress.wall_time_s += now - self._clock
        self._clock = now

    def metadata(self) -> dict[str, Any]:
        """Training facts for the model card: data, recipe, steps, time, validation metrics."""
        self._account_time()
        p = self.progress
        data_info = {"root": self.config.data.root, "train_split": self.config.data.train_split,
                     "val_split": self.config.data.val_split, "n_train_patches": len(self.train_data),
                     "n_val_patches": 0 if self.val_data is None else len(self.val_data)}
        manifest = getattr(self.train_data, "manifest", None)
        if isinstance(manifest, dict):     # PatchDataset: the prepared dataset's description, sans patch list
            data_info["manifest"] = {k: v for k, v in manifest.items() if k != "patches"}
        return {
            "name": self.config.name, "config_file": self.config.source, "config": self.config.to_dict(),
            "data": data_info, "steps": p.step, "epochs": p.epoch, "samples": p.samples,
            "wall_time_s": round(p.wall_time_s, 3), "device": str(self.device),
            "world_size": self.ctx.world_size, "amp": self.amp, "torch": str(torch.__version__),
            "best": {"step": p.best_step, "select_on": self.config.validation.select_on,
                     "metrics": p.best_metrics},
            "last_val": p.last_metrics, "val_history": p.history, "lineage": self.lineage,
        }

    def export_model(self, name: str) -> Path:
        """Write the current weights in the network's checkpoint format, atomically (main rank)."""
        path = self.out_dir / name
        if self.ctx.is_main:
            meta = self.metadata()
            with atomic_path(path) as tmp:
                self.export_fn(tmp, self.evaluated, self.model_config, meta)
        return path

    def write_summary(self, status: str) -> Path:
        path = self.out_dir / SUMMARY_FILE
        if self.ctx.is_main:
            summary = {"status": status, **self.metadata(),
                       "files": {"resume": RESUME_FILE, "best": BEST_FILE if self.progress.best_step else None,
                                 "final": FINAL_FILE if status == "finished" else None}}
            write_text_atomic(path, json.dumps(summary, indent=2, default=str))
        return path

    def _after_validation(self, result: ValidationResult, logger: RunLogger) -> None:
        p = self.progress
        score = result.score(self.config.validation.select_on)
        is_best = score > p.best_score
        metrics = {"step": p.step, "epoch": p.epoch, **result.as_dict()}
        p.last_metrics = metrics
        p.history.append(metrics)
        if is_best:
            p.best_score, p.best_step, p.best_metrics = score, p.step, metrics
            self.export_model(BEST_FILE)
        logger.validation({**metrics, "is_best": int(is_best)})
        self.write_summary("running")

    # ------------------------------------------------------------------ the loop
    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM: finish the current sample, save, stop. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _until_stopped(self, samples: Any) -> Iterator[dict[str, Any]]:
        """Iterate ``samples``; a loader failure caused by Ctrl-C (workers get the signal too)
        ends the iteration so the loop can save, instead of losing the run to a traceback."""
        iterator = iter(samples)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Exception:
                if self._stop_signal is None:
                    raise
                return
            yield batch

    def request_stop(self, reason: str = "request") -> None:
        """Ask the loop to save and stop after the current sample (used by signals and tests)."""
        self._stop_signal = reason

    def _save_and_stop(self) -> None:
        p = self.progress
        path = self.save_resume_checkpoint()
        self.write_summary("interrupted")
        raise CancelledError(
            f"training stopped ({self._stop_signal or 'another process'}) at step {p.step} "
            f"(+{p.micro} of {self.accumulate} accumulated samples); resume checkpoint {path}. "
            f"Continue with: implicity train {self.config.source} --resume")

    def fit(self, resume: bool = False, stop_after_samples: int | None = None) -> dict[str, Any]:
        """Train until ``schedule.max_steps`` (or ``max_epochs``); returns the run summary.

        ``stop_after_samples`` simulates an interruption after that many samples of this call.
        """
        cfg = self.config
        sched = cfg.schedule
        if resume:
            self.resume()
        self._clock = time.monotonic()
        p = self.progress
        logger = RunLogger(self.out_dir, self.ctx.is_main, sched.max_steps, p.step,
                           progress=self._progress_bar, tensorboard=self._tensorboard)
        seen_this_call = 0
        try:
            with self._stop_on_signals():
                while p.step < sched.max_steps and (sched.max_epochs is None or p.epoch < sched.max_epochs):
                    order = rank_epoch_order(len(self.train_data), cfg.seed, p.epoch, self.ctx)
                    samples = iterate_samples(self.train_data, order[p.epoch_pos:], p.epoch, cfg.seed,
                                              cfg.data.num_workers, pin_memory=self.device.type == "cuda")
                    finished_epoch = True
                    for batch in self._until_stopped(samples):
                        self._micro_step(batch)
                        seen_this_call += 1
                        if p.micro >= self.accumulate:
                            loss = self._optimizer_step()
                            logger.advance()
                            if p.step % sched.log_every == 0 or p.step == sched.max_steps:
                                self._account_time()
                                logger.train_step({"step": p.step, "epoch": p.epoch, "samples": p.samples,
                                                   "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                                                   "elapsed_s": round(p.wall_time_s, 3)})
                            if p.step % sched.val_every == 0 or p.step == sched.max_steps:
                                result = self.validate()
                                if result is not None:
                                    self._after_validation(result, logger)
                            if p.step % sched.checkpoint_every == 0 or p.step == sched.max_steps:
                                self.save_resume_checkpoint()
                            if sched.snapshot_every and p.step % sched.snapshot_every == 0:
                                self.export_model(snapshot_name(p.step))
                            if p.step >= sched.max_steps:
                                finished_epoch = p.epoch_pos >= len(order)
                                break
                        if stop_after_samples is not None and seen_this_call >= stop_after_samples:
                            self.request_stop("stop_after_samples")
                        if any_rank(self._stop_signal is not None, self.ctx):
                            self._save_and_stop()
                    if any_rank(self._stop_signal is not None, self.ctx):
                        self._save_and_stop()        # the loader was cut short by the signal
                    if finished_epoch:
                        p.epoch += 1
                        p.epoch_pos = 0
            final = self.export_model(FINAL_FILE)
            summary_path = self.write_summary("finished")
        finally:
            logger.close()
        return {"final": str(final), "summary": str(summary_path), "best": str(self.out_dir / BEST_FILE)
                if p.best_step is not None else None, "steps": p.step, "wall_time_s": p.wall_time_s,
                "best_metrics": p.best_metrics, "last_metrics": p.last_metrics}
