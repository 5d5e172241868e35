"""Progress display (a tqdm bar on a terminal, plain lines in logs) and result tables."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, List, Mapping, Optional, Sequence, TextIO

from tqdm import tqdm

from escn._util import is_terminal

__all__ = ["EpochProgress", "format_metrics_table", "format_summary", "fmt"]


def fmt(value: Optional[float]) -> str:
    """A number in a fixed-width friendly form ('-' for None / NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.4f}"
    return f"{value:.3e}"


class EpochProgress:
    """Progress of one epoch.

    On a terminal ``stream`` a tqdm bar (``epoch 3: 40%|####  | 6/15 [...] loss 0.1234 lr 1.000e-03``) is
    redrawn in place and removed at the end of the epoch.  Elsewhere (a log file, a pipe) no bar is drawn:
    a plain line ``epoch 3 [6/15] loss 0.1234 lr 1.000e-03`` is printed about every ``interval`` seconds
    and after the epoch's last batch.

    Args:
        epoch: 0-based epoch number (shown 1-based).
        total: batches in the epoch; initial: batches already done (resumed runs).
        enabled: print nothing when False (``progress = false`` in the config, ``--no-progress``).
        stream: where to write (default stderr).
        interval: seconds between plain lines; the bar is redrawn at most every ``min(interval, 0.1)`` seconds.
    """

    def __init__(
        self,
        epoch: int,
        total: int,
        initial: int = 0,
        enabled: bool = True,
        stream: Optional[TextIO] = None,
        interval: float = 5.0,
    ):
        self.enabled = enabled
        self.total = total
        self.count = initial
        self.epoch = epoch
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last = time.monotonic()
        self._postfix = ""
        self._bar: Optional[tqdm] = None
        if enabled and is_terminal(self.stream):
            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=f"epoch {epoch + 1}",
                leave=False,
                dynamic_ncols=True,
                file=self.stream,
                mininterval=min(interval, 0.1),
            )

    def update(self, postfix: Mapping[str, float]) -> None:
        """One more batch done; ``postfix`` (e.g. loss, lr) is shown next to the count."""
        self.count += 1
        if not self.enabled:
            return
        self._postfix = " ".join(f"{k} {fmt(v)}" for k, v in postfix.items())
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix, refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._last >= self.interval or self.count == self.total:
            self._last = now
            print(f"epoch {self.epoch + 1} [{self.count}/{self.total}] {self._postfix}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _metric_keys(rows: Sequence[Mapping[str, Any]], prefixes: Sequence[str]) -> List[str]:
    keys: List[str] = []
    for row in rows:
        if row is None:
            continue
        for name in row:
            for p in prefixes:
                if name.startswith(p + "mae_") or name.startswith(p + "acc_"):
                    key = name[len(p) :].split("_", 1)[1]
                    if key not in keys:
                        keys.append(key)
    return keys


def format_metrics_table(metrics: Mapping[str, float], title: str = "") -> str:
    """A table of MAE / RMSE (or accuracy) per key from :meth:`LossFunction.summarize` output."""
    keys = _metric_keys([metrics], [""])
    lines = [title] if title else []
    lines.append(f"{'key':24s}{'MAE':>14s}{'RMSE':>14s}")
    for k in keys:
        if f"acc_{k}" in metrics:
            lines.append(f"{k:24s}{'acc ' + fmt(metrics[f'acc_{k}']):>14s}{'-':>14s}")
        else:
            lines.append(f"{k:24s}{fmt(metrics.get(f'mae_{k}')):>14s}{fmt(metrics.get(f'rmse_{k}')):>14s}")
    if "loss" in metrics:
        lines.append(f"{'loss':24s}{fmt(metrics['loss']):>14s}")
    return "\n".join(lines)


def format_summary(
    last_train: Optional[Mapping[str, float]],
    last_valid: Optional[Mapping[str, float]],
    best: Optional[Mapping[str, Any]],
    steps: int,
    epochs_done: float,
    seconds: float,
) -> str:
    """The end-of-training table: train / valid (last) and valid (best) MAE per key, and the best epoch."""
    rows = [r for r in (last_train, last_valid, best.get("metrics") if best else None) if r]
    keys = _metric_keys(rows, ["train_", "valid_"])
    head = (
        f"{'key':24s}{'train MAE':>13s}{'valid MAE':>13s}{'train RMSE':>13s}{'valid RMSE':>13s}{'best valid MAE':>16s}"
    )
    lines = [f"training finished: {steps} steps, {epochs_done:.2f} epochs, {seconds:.1f} s", head]
    tr, va = last_train or {}, last_valid or {}
    bm = (best or {}).get("metrics") or {}
    for k in keys:
        metric = "acc" if (f"train_acc_{k}" in tr or f"valid_acc_{k}" in va) else "mae"
        lines.append(
            f"{k:24s}{fmt(tr.get(f'train_{metric}_{k}')):>13s}{fmt(va.get(f'valid_{metric}_{k}')):>13s}"
            f"{fmt(tr.get(f'train_rmse_{k}')):>13s}{fmt(va.get(f'valid_rmse_{k}')):>13s}"
            f"{fmt(bm.get(f'valid_{metric}_{k}')):>16s}"
        )
    lines.append(f"{'loss':24s}{fmt(tr.get('train_loss')):>13s}{fmt(va.get('valid_loss')):>13s}")
    if best:
        lines.append(f"best epoch: {best['epoch'] + 1} (step {best['step']}, valid loss {fmt(best['valid_loss'])})")
    else:
        lines.append("best epoch: - (no validation data)")
    return "\n".join(lines)
