"""Experiment trackers (``--report-to tensorboard|wandb``): training scalars during training, the
evaluation matrices and summaries after ``ticlip eval``.

One x axis for training: the **global iteration**, counted across the run's steps (step t's iteration
i is logged at ``offset_t + i``, ``offset_t`` = the iterations planned for the steps before t), so the
curves of consecutive steps follow each other; ``train/step`` is the step index at that point.

After evaluation (``log_evaluation``): per dynamic task, the model after step i's mean over every
step's data and its in-domain score at x = i (``eval/<task>/row_mean``, ``eval/<task>/in_domain``), the
whole matrix as a table, and the summary's numbers (``summary/<task>/<metric>``).

- TensorBoard: torch's ``SummaryWriter`` into ``<run>/tensorboard`` (package ``tensorboard``).
- Weights & Biases: ``wandb`` into ``<run>/wandb``. ticlip never needs the network while it runs, so
  the run is offline unless ``WANDB_MODE`` says otherwise (``wandb sync <run>/wandb/offline-run-*``
  uploads it later). The W&B run id is kept in run.json (``extra.wandb_id``), so evaluation logs into
  the same W&B run as training.

Both back-ends are optional extras; a missing one is a one-line TiclipError saying what to install.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

from ticlip.errors import TiclipError

TRACKERS = ("tensorboard", "wandb")
TRAIN_KEYS = ("loss", "lr", "pairs_per_s", "logit_scale", "extra_loss", "budget_used")
WANDB_PROJECT = "ticlip"


def require_tensorboard():
    """torch's SummaryWriter, or a clear error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TiclipError(
            "--report-to tensorboard needs the tensorboard package: pip install tensorboard "
            "(or pip install 'ticlip[tensorboard]')"
        ) from None
    return SummaryWriter


def require_wandb():
    """The wandb module, or a clear error when it is missing."""
    try:
        import wandb
    except ImportError:
        raise TiclipError("--report-to wandb needs the wandb package: pip install wandb "
                          "(or pip install 'ticlip[wandb]')") from None
    return wandb


def require_tracker(name: str) -> None:
    """Check before any work that the back-end of ``--report-to NAME`` is installed."""
    if name == "tensorboard":
        require_tensorboard()
    elif name == "wandb":
        require_wandb()
    elif name:
        raise TiclipError(f"report_to: unknown tracker {name!r}; use one of {', '.join(TRACKERS)} or none")


def _train_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    return {f"train/{k}": float(record[k]) for k in TRAIN_KEYS if k in record and record[k] is not None}


class TensorBoardLog:
    """Training scalars to TensorBoard at the global iteration ``offset + record["iteration"]``; set
    ``step_index`` and ``offset`` as each step starts."""

    def __init__(self, log_dir: str, step_index: int = 0, iteration_offset: int = 0):
        self.writer = require_tensorboard()(log_dir=log_dir)
        self.step_index = step_index
        self.offset = iteration_offset

    def __call__(self, record: dict) -> None:
        x = self.offset + int(record["iteration"])
        for key, value in _train_scalars(record).items():
            self.writer.add_scalar(key, value, x)
        self.writer.add_scalar("train/step", self.step_index, x)

    def log_evaluation(self, matrices: Mapping[str, tuple[Any, Sequence[str]]], summary: Mapping) -> None:
        for task, (E, labels) in matrices.items():
            for i, (row_mean, diag) in enumerate(_row_curves(E)):
                if not math.isnan(row_mean):
                    self.writer.add_scalar(f"eval/{task}/row_mean", row_mean, i)
                if not math.isnan(diag):
                    self.writer.add_scalar(f"eval/{task}/in_domain", diag, i)
            self.writer.add_text(f"eval/{task}/matrix", _markdown_matrix(E, labels), 0)
        last = max((len(labels) - 1 for _, labels in matrices.values()), default=0)
        for key, value in summary_scalars(summary).items():
            self.writer.add_scalar(key, value, last)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class WandbLog:
    """Training scalars to Weights & Biases (``wandb.log(..., step=global iteration)``); offline unless
    ``WANDB_MODE`` is set. ``run_id`` resumes the run training logged into (evaluation uses it)."""

    def __init__(self, run_dir: str, name: str, run_id: str | None = None, step_index: int = 0,
                 iteration_offset: int = 0, config: dict | None = None, job_type: str = "train"):
        wandb = require_wandb()
        os.makedirs(os.path.join(run_dir, "wandb"), exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=name,
                              id=run_id, resume="allow", dir=run_dir,
                              mode=os.environ.get("WANDB_MODE", "offline"), config=config or {},
                              job_type=job_type, reinit="finish_previous")
        self.step_index = step_index
        self.offset = iteration_offset

    @property
    def run_id(self) -> str:
        return self.run.id

    def __call__(self, record: dict) -> None:
        x = self.offset + int(record["iteration"])
        self.run.log({**_train_scalars(record), "train/step": self.step_index}, step=x)

    def log_evaluation(self, matrices: Mapping[str, tuple[Any, Sequence[str]]], summary: Mapping) -> None:
        import wandb

        for task, (E, labels) in matrices.items():
            rows = [[labels[i]] + [None if math.isnan(float(v)) else float(v) for v in E[i]] for i in range(len(E))]
            self.run.log({f"eval/{task}/matrix": wandb.Table(columns=["model_step"] + list(labels), data=rows)})
        for key, value in summary_scalars(summary).items():
            self.run.summary[key] = value

    def close(self) -> None:
        import wandb

        self.run.finish()
        # wandb-core may still hold the last records of the offline run file in its buffers after
        # finish(); tearing the service down flushes them, so the file is whole when we return
        wandb.teardown()


def open_tracker(name: str, run_dir: str, run_name: str, *, run_id: str | None = None,
                 config: dict | None = None, job_type: str = "train"):
    """The logger of ``--report-to NAME`` for ``run_dir`` (None for "")."""
    if name == "tensorboard":
        return TensorBoardLog(os.path.join(run_dir, "tensorboard"))
    if name == "wandb":
        return WandbLog(run_dir, run_name, run_id, config=config, job_type=job_type)
    require_tracker(name)
    return None


def summary_scalars(summary: Mapping) -> dict[str, float]:
    """The numbers of an eval summary (eval_summary.json) as ``summary/<task>/<key>`` scalars:
    dynamic tasks' transfer metrics, static tasks' summaries, the task stream's scores."""
    out: dict[str, float] = {}
    for group in ("dynamic", "static"):
        for task, values in (summary.get(group) or {}).items():
            for key, v in (values or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v)):
                    out[f"summary/{task}/{key}"] = float(v)
    for key, v in (summary.get("task_stream") or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v)):
            out[f"summary/task_stream/{key}"] = float(v)
    return out


def _row_curves(E) -> list[tuple[float, float]]:
    out = []
    for i, row in enumerate(E):
        vals = [float(v) for v in row if not math.isnan(float(v))]
        diag = float(row[i]) if i < len(row) else math.nan
        out.append((sum(vals) / len(vals) if vals else math.nan, diag))
    return out


def _markdown_matrix(E, labels: Sequence[str]) -> str:
    head = "| model step | " + " | ".join(labels) + " |\n|---|" + "---:|" * len(labels) + "\n"
    body = "".join(f"| {labels[i]} | " + " | ".join("–" if math.isnan(float(v)) else f"{100 * float(v):.1f}"
                                                     for v in row) + " |\n" for i, row in enumerate(E))
    return head + body


__all__ = ["TRACKERS", "TensorBoardLog", "WandbLog", "open_tracker", "require_tensorboard", "require_tracker",
           "require_wandb", "summary_scalars"]
