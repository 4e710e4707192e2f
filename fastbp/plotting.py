"""Figures of a training run: :func:`plot_history` (loss and accuracy curves).

Matplotlib is imported inside each function, when a figure is drawn: ``import fastbp``,
:mod:`fastbp.train` and ``fastbp train`` without ``--out`` never load it (its import is
slow and not needed to train). Figures are drawn with Matplotlib's
object API on an Agg canvas, so the caller's pyplot backend and state are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .checkpoint import History

__all__ = ["plot_history"]


def plot_history(history: "History", path: str | os.PathLike, *, title: str | None = None,
                 steps_per_epoch: int | None = None) -> Path:
    """Save the loss and accuracy curves of ``history`` as an image (PNG by extension).

    Left: the mini-batch loss of every step and its mean over each evaluation period.
    Right: train and test accuracy at each evaluation, drawn like the book's figure (test
    dashed, y from 0 to 1), against epochs.

    Parameters
    ----------
    history : fastbp.checkpoint.History
    path : str or os.PathLike
        Parent folders are created.
    title : str, optional
    steps_per_epoch : int, optional
        Converts the evaluation steps into epochs. Default: the step of the first
        evaluation (runs evaluated once per epoch).

    Returns
    -------
    pathlib.Path
        `path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = np.arange(1, history.steps + 1)
    ax_loss.plot(steps, history.step_loss, lw=0.5, alpha=0.5, label="mini-batch loss")
    if history.epoch_step:
        ax_loss.plot(history.epoch_step, history.epoch_loss, marker="o", ms=3, label="period mean")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    if steps_per_epoch is None:
        # Evaluations at whole epochs (plus the last step): the first one gives the steps
        # per epoch; the last point may be a fraction of one.
        steps_per_epoch = history.epoch_step[0] if len(history.epoch_step) > 1 else None
    if steps_per_epoch:
        epochs = np.asarray(history.epoch_step, dtype=float) / steps_per_epoch
    else:
        epochs = np.ones(len(history.epoch_step))
    ax_acc.plot(epochs, history.train_acc, marker="o", label="train acc")
    ax_acc.plot(epochs, history.test_acc, marker="s", linestyle="--", label="test acc")
    ax_acc.set_xlabel("epochs")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1.0)
    ax_acc.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    return path
