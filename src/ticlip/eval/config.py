"""How to evaluate: :class:`EvalConfig` (one schema: YAML ``eval:`` sections, ``ticlip eval`` flags and
``--set eval.x=y`` overrides all come from it) and :func:`check_eval_config`, which checks the task
names against the task table without loading any model or data (``ticlip run`` calls it before
training)."""

from __future__ import annotations

from ticlip.eval.tasks import TaskError, load_tasks, select_tasks
from ticlip.schema import ConfigError, Field, Schema


class EvalConfig(Schema):
    """How to evaluate a run or a checkpoint (see docs/EVAL.md)."""

    tasks: list[str] | None = Field(
        None, description="task names from the task table, or 'dynamic' / 'static' (none given: every default "
        "task; dynamic tasks whose eval set the stream lacks are left out, static tasks whose data is missing "
        "are skipped with one line; see --list-tasks)")
    seeds: int = Field(3, ge=1, description="retrieval subsamples drawn per step")
    subsample: int | None = Field(
        None, ge=1, description="pairs per retrieval subsample (none given: the smallest step's retrieval set, "
        "capped at subsample_cap)")
    subsample_cap: int = Field(1000, ge=1, description="largest automatic retrieval subsample size")
    batch_size: int = Field(256, ge=1, description="images/texts encoded at once")
    device: str = Field("cpu", description="cpu or cuda (cuda:1 for the second GPU)")
    workers: int = Field(0, ge=0, description="DataLoader worker processes for static sets")
    data_dir: str | None = Field(
        None, description="where static task data lives ({data_dir} in the task table; none given: "
        "$TICLIP_DATA_DIR or ./data)")
    task_file: str | None = Field(None, description="YAML task table adding to / overriding the built-in one")
    steps: list[int] | None = Field(
        None, description="model step indices to evaluate (none given: every finished step)")
    cache_bytes: int = Field(2 << 30, ge=0, description="bytes of preprocessed eval pixels kept across a run's models")


def check_eval_config(cfg: EvalConfig, *, source: str) -> None:
    """Check ``cfg`` against the task table (built-in + ``task_file``) and the machine, without loading
    any model or data: ConfigError, one line naming ``source``, the bad value and what is accepted."""
    try:
        tasks = load_tasks(cfg.task_file)
    except TaskError as e:
        raise ConfigError(f"{source}: task_file: {e}") from None
    try:
        select_tasks(tasks, cfg.tasks)
    except TaskError as e:
        raise ConfigError(f"{source}: tasks: {e}") from None
    check_device(cfg, source=source)


def check_device(cfg: EvalConfig, *, source: str) -> None:
    """A CUDA device needs CUDA on this machine."""
    if cfg.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{source}: device {cfg.device!r}: CUDA is not available on this machine (use cpu)")


__all__ = ["EvalConfig", "check_device", "check_eval_config"]
