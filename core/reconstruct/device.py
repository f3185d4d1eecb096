"""Device choice (auto / cpu / cuda[:N]), decoder batch sizing and CUDA out-of-memory recovery.

The batch size is the number of decoder queries per call: larger batches amortise Python and
kernel-launch overhead, but on CPU nothing is gained beyond ~10^5 queries while the memory grows,
so the CPU size is capped; on CUDA it follows the free device memory. When CUDA still runs out of
memory the batch is halved and the same work is retried, so a run never dies on a busy GPU.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Callable, TypeVar

import torch

from ..errors import CancelledError, ImplicityError, InputError

log = logging.getLogger(__name__)
T = TypeVar("T")

BYTES_PER_QUERY = 4 * 1024  # float32 activations of the decoder per query, generously counted
CPU_MAX_BATCH = 1 << 16
CUDA_MAX_BATCH = 1 << 21
MIN_BATCH = 256


def resolve_device(spec: str | None) -> tuple[torch.device, str]:
    """The torch device for ``spec`` and a sentence saying why it was chosen."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return torch.device("cuda:0"), f"auto: CUDA is available ({name})"
        return torch.device("cpu"), "auto: no CUDA device is available, using the CPU"
    if spec == "cpu":
        return torch.device("cpu"), "requested with --device cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(
                f"--device {spec}: no CUDA device is available (torch {torch.__version__} "
                f"{'has no CUDA support' if torch.version.cuda is None else 'sees no GPU'}). "
                "Use --device cpu or auto."
            )
        index = 0
        if ":" in spec:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise InputError(f"--device {spec}: write cuda:N with N a GPU number, e.g. cuda:0.") from None
        count = torch.cuda.device_count()
        if not 0 <= index < count:
            raise InputError(f"--device {spec}: there are {count} CUDA device(s), numbered 0..{count - 1}.")
        return torch.device(f"cuda:{index}"), f"requested with --device {spec} ({torch.cuda.get_device_name(index)})"
    raise InputError(f"--device '{spec}': use auto, cpu, cuda or cuda:N.")


def _available_ram() -> int:
    """Available system memory in bytes (Linux /proc/meminfo; a safe guess elsewhere)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2 << 30


def auto_batch_size(device: torch.device, requested: int | None = None) -> int:
    """Decoder queries per call: the user's number, or a quarter of free memory, capped."""
    if requested is not None:
        if requested < 1:
            raise InputError(f"--batch-size must be a positive number of queries, got {requested}.")
        return int(requested)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(MIN_BATCH, min(CUDA_MAX_BATCH, free // 2 // BYTES_PER_QUERY)))
    return int(max(MIN_BATCH, min(CPU_MAX_BATCH, _available_ram() // 4 // BYTES_PER_QUERY)))


def _is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(exc, oom_type)) or "out of memory" in str(exc).lower()


class BatchRunner:
    """Runs a function over slices of a batch, halving the slice size on CUDA out-of-memory.

    ``is_cancelled`` is asked before every slice, so a cancel is honoured within one decoder batch
    (well under a second) instead of at the end of a 64 m window.
    """

    def __init__(self, device: torch.device, batch_size: int, is_cancelled: Callable[[], bool] | None = None) -> None:
        self.device = device
        self.batch_size = batch_size
        self.halvings = 0
        self.is_cancelled = is_cancelled

    def map(self, total: int, fn: Callable[[int, int], T], unit: int = 1) -> list[T]:
        """``[fn(start, stop) for consecutive slices covering range(total)]``; an item counts as
        ``unit`` queries (e.g. a pixel with K heights), so a slice holds ~``batch_size`` queries."""
        out: list[T] = []
        start = 0
        while start < total:
            if self.is_cancelled is not None and self.is_cancelled():
                raise CancelledError("reconstruction stopped by the user; no output was written")
            stop = min(total, start + max(1, self.batch_size // max(1, unit)))
            try:
                out.append(fn(start, stop))
            except RuntimeError as exc:
                if self.device.type != "cuda" or not _is_oom(exc):
                    raise
                torch.cuda.empty_cache()
                if self.batch_size <= MIN_BATCH:
                    raise ImplicityError(
                        f"CUDA ran out of memory even with {self.batch_size} queries per batch. "
                        "Close other GPU programs or use --device cpu."
                    ) from None
                self.batch_size = max(MIN_BATCH, self.batch_size // 2)
                self.halvings += 1
                log.warning("CUDA out of memory: decoder batch halved to %d queries", self.batch_size)
                continue
            start = stop
        return out


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for ``fp16``/``bf16`` on CUDA; full float32 otherwise (``auto`` = fp32)."""
    if precision in ("auto", "fp32"):
        yield
        return
    if precision not in ("fp16", "bf16"):
        raise InputError(f"--precision '{precision}': use auto, fp32, fp16 or bf16.")
    if device.type != "cuda":
        raise InputError(f"--precision {precision} is only supported on CUDA; on the CPU use fp32 (auto).")
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    with torch.autocast("cuda", dtype=dtype):
        yield
