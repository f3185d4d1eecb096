"""Training logs: CSV files (exact numbers, easy to diff), TensorBoard scalars, a tqdm bar.

Only the main rank logs. On resume every log is cut back to the checkpoint's step, so the logs
of an interrupted-and-resumed run read exactly like those of an uninterrupted one.
"""
from __future__ import annotations

import csv
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from implicity.core.outputs import atomic_path


class CsvLog:
    """An append-only CSV with a fixed header, keyed by the optimizer step in column ``step``."""

    def __init__(self, path: str | os.PathLike[str], fields: Sequence[str]) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        if not self.path.exists() or self.path.stat().st_size == 0:
            with atomic_path(self.path) as tmp:
                with open(tmp, "w", newline="", encoding="utf-8") as fh:
                    csv.writer(fh).writerow(self.fields)

    def append(self, row: Mapping[str, Any]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.DictWriter(fh, self.fields, extrasaction="ignore").writerow(
                {k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})

    def rows(self) -> list[dict[str, str]]:
        with open(self.path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (written after the checkpoint we resume from)."""
        kept = [r for r in self.rows() if int(r["step"]) <= step]
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, self.fields, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)


class RunLogger:
    """CSV + TensorBoard + progress bar for one run; a no-op object on non-main ranks."""

    TRAIN_FIELDS = ("step", "epoch", "samples", "loss", "lr", "elapsed_s")
    VAL_FIELDS = ("step", "epoch", "iou", "dsm_medae_m", "dsm_completeness", "val_loss", "is_best")

    def __init__(self, out_dir: str | os.PathLike[str], enabled: bool, total_steps: int,
                 start_step: int = 0, progress: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._tb = None
        self._bar = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.train_csv = CsvLog(self.out_dir / "train_log.csv", self.TRAIN_FIELDS)
        self.val_csv = CsvLog(self.out_dir / "val_log.csv", self.VAL_FIELDS)
        self.train_csv.truncate_after(start_step)
        self.val_csv.truncate_after(start_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step + 1)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                             file=sys.stderr, dynamic_ncols=True)

    def train_step(self, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.train_csv.append(row)
        if self._tb is not None:
            self._tb.add_scalar("train/loss", row["loss"], row["step"])
            self._tb.add_scalar("train/lr", row["lr"], row["step"])
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def validation(self, row: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.val_csv.append(row)
        if self._tb is not None:
            for key in ("iou", "dsm_medae_m", "dsm_completeness", "val_loss"):
                if row.get(key) is not None:
                    self._tb.add_scalar(f"val/{key}", row[key], row["step"])
        if self._bar is not None:
            self._bar.write(f"step {row['step']}: val IoU {row['iou']:.4f}"
                            + (f", DSM MedAE {row['dsm_medae_m']:.3f} m" if row.get("dsm_medae_m") is not None else "")
                            + (" (best)" if row.get("is_best") else ""))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
