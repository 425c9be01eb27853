"""Metrics: every step appends one JSON line to ``metrics.jsonl`` and shows a rich progress line.

Metric names are fixed and listed in docs/metrics.md (``objective/kl``, ``rm/accuracy``, ...).
Trackers (TensorBoard, W&B) receive the same dict through Accelerate when the run asks for them.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from rlhaif.data.io import append_jsonl


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _rich_progress():
    """The progress line every stage shows: description, bar, done/total, time left, then an info field."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), transient=False)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None = None, enabled: bool = True
                 ) -> Iterator[Callable[[int, int | None], None]]:
    """A progress line for work that logs no metrics rows (sampling, say); yields ``update(done, total)``.
    Disabled (``enabled`` false, e.g. on other processes than the main one), ``update`` does nothing."""
    if not enabled:
        yield lambda done, total=None: None
        return
    with _rich_progress() as bar:
        task = bar.add_task(description, total=total, info="")
        yield lambda done, total=None: bar.update(task, completed=done, **({"total": total} if total else {}))


class MetricsLogger:
    """Append-only metrics log + progress display. Only the main process writes."""

    def __init__(self, out_dir: str | Path, total_steps: int | None = None, description: str = "train",
                 accelerator=None, show: tuple[str, ...] = (), enabled: bool = True, start_step: int = 0):
        """``total_steps`` is the run's last step; ``start_step`` the step a resumed run starts after (the
        progress bar starts there)."""
        self.path = Path(out_dir) / "metrics.jsonl"
        self.accelerator = accelerator
        self.enabled = enabled and (accelerator is None or accelerator.is_main_process)
        self.show = show
        self.total = total_steps
        self.description = description
        self.start_step = start_step
        self._progress = None
        self._task = None
        self._t0 = time.time()
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "MetricsLogger":
        if self.enabled:
            self._progress = _rich_progress()
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, completed=self.start_step,
                                                 info="")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, step: int, metrics: dict[str, Any], advance: int = 1) -> None:
        row = {"step": step, "time": round(time.time() - self._t0, 3), **{k: _clean(v) for k, v in metrics.items()}}
        if self.accelerator is not None and self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)
        if not self.enabled:
            return
        append_jsonl(self.path, row)
        if self._progress is not None:
            keys = self.show or tuple(k for k in metrics if isinstance(row.get(k), (int, float)))[:4]
            info = "  ".join(f"{k.split('/')[-1]}={row[k]:.4g}" for k in keys if isinstance(row.get(k), (int, float)))
            self._progress.update(self._task, advance=advance, info=info)

    def advance(self, n: int) -> None:
        """Move the progress bar by ``n`` without logging a row (work inside a step: a stage whose steps are
        long shows it as it goes)."""
        if self._progress is not None:
            self._progress.update(self._task, advance=n)

    def print(self, *args: Any) -> None:
        if self.enabled:
            if self._progress is not None:
                self._progress.console.print(*args)
            else:
                print(*args)
