"""Evaluate a run (every step checkpoint on every step's eval sets and every static task) or one
outside checkpoint, appending each (model step, task, eval step) result to ``eval.jsonl`` as it
finishes and skipping results already there.

The parts: :mod:`ticlip.eval.plan` (what is pending), :mod:`ticlip.eval.cache` (eval sets, static
data, pixels and features, each read or computed once), :mod:`ticlip.eval.scorers` (one scorer per
task kind) and :mod:`ticlip.eval.results` (eval.jsonl, matrices, static scores, summary).

Cost model (what makes this cheaper than DataComp's one-pair-at-a-time loop):

- each model is loaded once, and not at all when all its results exist;
- each eval set is read from its shards once per run, preprocessed once per run (pixel tensors are
  kept across the run's models within ``cache_bytes``), and encoded once per model in large
  batches; retrieval subsamples and seeds are drawn on the features;
- each zero-shot classifier is built once per model and reused for every step (and, for WordNet
  subtrees, restricted by column).
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ticlip.errors import TiclipError
from ticlip.eval.cache import EvalSets, FeatureCache, PixelCache, StaticSets
from ticlip.eval.config import EvalConfig, check_device, check_eval_config
from ticlip.eval.encode import eval_transform
from ticlip.eval.metrics import json_safe
from ticlip.eval.plan import EvalPlan, ModelRef, Pending
from ticlip.eval.dist import SINGLE, EvalDist, share
from ticlip.eval.results import (EVAL_LOG, append_result, latest_results, merge_parts, part_path, read_results,
                                 write_result_tables)
from ticlip.eval.scorers import ScoringContext, score_task
from ticlip.eval.shared import SharedResults
from ticlip.eval.task_scores import held_out_specs
from ticlip.eval.tasks import TaskSpec, load_tasks, select_tasks
from ticlip.models import create_model, quiet_open_clip
from ticlip.progress import EvalProgress

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class EvalOutcome:
    out_dir: str
    evaluated: int = 0  # results computed now
    reused: int = 0  # results found in eval.jsonl
    models_loaded: int = 0
    skipped_tasks: dict[str, str] = field(default_factory=dict)
    skipped_models: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


class Evaluator:
    """Scores models on a stream's dynamic tasks and on static tasks; see the module docstring."""

    shared = None  # a ticlip.eval.shared.SharedResults: results copied between identical checkpoints
    dist: EvalDist = SINGLE  # under torchrun: this rank's share of the work (ticlip.eval.dist)

    def __init__(self, stream, config: EvalConfig, out_dir: str, log: Log = _stderr,
                 progress: EvalProgress | None = None):
        check_device(config, source="eval")
        # models, tasks and images+texts encoded per second on stderr (counted even when not shown)
        self.progress = progress or EvalProgress(enabled=False)
        self.stream, self.config, self.out_dir, self.log = stream, config, out_dir, self.progress.wrap_log(log)
        self.log_path = os.path.join(out_dir, EVAL_LOG)
        self.write_path = self.log_path  # where this process appends results (a rank: its part file)
        self.table = load_tasks(config.task_file)
        self.table.update(held_out_specs(stream))  # a task stream's held-out tasks: static tasks held-out:<task>
        self.specs = select_tasks(self.table, config.tasks)
        self.skipped_tasks: dict[str, str] = {}
        self.eval_sets = EvalSets(stream)
        self.static_sets = StaticSets(config.data_dir, stream, self._skip)
        self.pixels = PixelCache(config.cache_bytes)
        self.plan = EvalPlan(stream, self.specs, self.eval_sets, self.static_sets, named=config.tasks,
                             seeds=config.seeds, subsample=config.subsample, subsample_cap=config.subsample_cap,
                             skip=self._skip, skipped=self.skipped_tasks)

    @property
    def subsample(self) -> int | None:
        return self.plan.subsample

    @property
    def dynamic(self):
        """The planned dynamic tasks (``ticlip.eval.plan.DynamicTask``)."""
        return self.plan.dynamic

    def _skip(self, task: str, why: str) -> None:
        if task not in self.skipped_tasks:
            self.skipped_tasks[task] = why
            self.log(f"skipping task {task}: {why}")

    # ----------------------------------------------------------------------- running
    def run(self, models: Sequence[ModelRef], rows: Sequence[tuple[int, str]]) -> EvalOutcome:
        """Evaluate ``models``; then write the matrices for ``rows`` (index, label) and the summary."""
        outcome = EvalOutcome(out_dir=self.out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        ed = self.dist
        if ed.distributed:
            if ed.is_main:  # results of an interrupted distributed evaluation count as done
                merge_parts(self.log_path, warn=self.log)
            ed.barrier()
        done = latest_results(read_results(self.log_path, warn=self.log))
        # Planned before any model loads, so that missing static data is reported first.
        plans = [(model, *self.plan.pending(model, done)) for model in models]
        # the position of each pending result in one process's order: rank 0 merges the ranks' parts in it
        order = {(m.index, spec.name, j): k for k, (m, spec, j) in
                 enumerate((m, spec, j) for m, todo, _ in plans for spec, j in todo)}
        if ed.distributed:
            plans = share(plans, ed.rank, ed.world_size)
            self.write_path = part_path(self.log_path, ed.rank)
        runnable = [m for m, todo, _ in plans if todo and os.path.exists(m.checkpoint)]
        self.progress.begin(sum(len(todo) for m, todo, _ in plans if m in runnable))
        for model, todo, present in plans:
            outcome.reused += present
            if not todo:
                if present:
                    self.log(f"model step {model.label}: all {present} results present in {EVAL_LOG}, skipped")
                continue
            if not os.path.exists(model.checkpoint):
                outcome.skipped_models[model.label] = f"checkpoint {model.checkpoint} does not exist"
                self.log(f"model step {model.label}: checkpoint {model.checkpoint} does not exist, skipped")
                continue
            t0 = time.perf_counter()
            self.progress.start_model(model.label, runnable.index(model) + 1, len(runnable))
            records = self._evaluate_shared(model, todo) if self.shared else self._evaluate_model(model, todo)
            self.progress.finish_model(len(records))  # results copied from an identical checkpoint count too
            outcome.models_loaded += 1
            outcome.evaluated += len(records)
            for rec in records:
                done[(model.index, rec["task"], None if rec["eval_step"] is None else rec["eval_step"]["index"])] = rec
            self.log(
                f"model step {model.label}: {len(records)} results in {time.perf_counter() - t0:.1f} s"
                + (f" ({present} already present)" if present else "") + f"; {self.progress.model_summary()}"
            )
        self.progress.close()
        outcome.skipped_tasks = dict(self.skipped_tasks)
        if ed.distributed:
            done = self._gather(outcome, order)
            if not ed.is_main:
                return outcome  # rank 0 writes the tables; this rank's outcome counts its own work
        outcome.files, outcome.summary = self.write_tables(list(done.values()), rows)
        return outcome

    def _gather(self, outcome: EvalOutcome, order: dict) -> dict:
        """Every rank's counts into rank 0's ``outcome``, and (rank 0) the ranks' part files merged into
        eval.jsonl in ``order``; returns the results now in eval.jsonl (rank 0) or an empty dict."""
        mine = (outcome.evaluated, outcome.models_loaded, outcome.skipped_models)
        everyone = self.dist.all_gather(mine)  # also: every rank has finished writing its part file
        if not self.dist.is_main:
            return {}
        outcome.evaluated = sum(e for e, _, _ in everyone)
        outcome.models_loaded = sum(m for _, m, _ in everyone)
        for _, _, skipped in everyone:
            outcome.skipped_models.update(skipped)
        merge_parts(self.log_path, order, warn=self.log)
        return latest_results(read_results(self.log_path, warn=self.log))

    def _evaluate_shared(self, ref: ModelRef, todo: Pending) -> list[dict]:
        """Results of a checkpoint whose tensors were evaluated before are copied (``ticlip.eval.shared``);
        the rest are computed and kept for the next such checkpoint."""
        copied, todo = self.shared.split(ref, todo)
        computed = self._evaluate_model(ref, todo) if todo else []
        self.shared.store(ref, computed)
        return copied + computed

    def _evaluate_model(self, ref: ModelRef, todo: Pending) -> list[dict]:
        cfg = self.config
        with quiet_open_clip():
            bundle = create_model(ref.model, init=ref.checkpoint, device=cfg.device)
        bundle.model.eval()
        features = FeatureCache(bundle.model, bundle.tokenizer, eval_transform(bundle), (bundle.name, bundle.image_size),
                                self.pixels, batch_size=cfg.batch_size, device=cfg.device, workers=cfg.workers,
                                on_encoded=self.progress.encoded)
        ctx = ScoringContext(features, self.eval_sets, self.static_sets, self.stream, seeds=cfg.seeds,
                             subsample=self.plan.subsample, dynamic_tasks={t.spec.name: t for t in self.plan.dynamic},
                             log=self.log)
        out = []
        for k, (spec, j) in enumerate(todo, 1):
            self.progress.start_task(spec.name, None if j is None else self.stream.steps[j].label, k, len(todo))
            t0 = time.perf_counter()
            if j is None:  # reading a static set is charged to its first result
                t0 -= self.static_sets.take_load_time(spec.name)
            result = score_task(spec, j, ctx)
            rec = self._record(ref, spec, j, result.metrics, result.extra, time.perf_counter() - t0)
            append_result(self.write_path, rec)
            out.append(rec)
            self.progress.finish_task()
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
        return out

    def _record(self, ref: ModelRef, spec: TaskSpec, j: int | None, metrics: dict, extra: dict, seconds: float) -> dict:
        rec = {
            "model_step": {"index": ref.index, "label": ref.label},
            "task": spec.name,
            "kind": spec.kind,
            "eval_step": None if j is None else {"index": j, "label": self.stream.steps[j].label},
            "metric": spec.main_metric,
            "metrics": metrics,
        }
        for k in ("std", "seeds", "n", "images", "classes", "chance", "trials", "per_seed"):
            if k in extra:
                rec[k] = extra[k]
        skipped = self.eval_sets.skipped(spec.eval_set, j) if spec.eval_set and j is not None else {}
        if skipped:  # samples of the eval set left out as unreadable: counted, never silent
            rec["skipped_samples"] = skipped
        rec.update(
            settings=self.plan.settings(spec),
            time=round(seconds, 4),
            model=ref.model,
            checkpoint=ref.checkpoint,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        return json_safe(rec)

    def write_tables(self, records: list[dict], rows: Sequence[tuple[int, str]]) -> tuple[list[str], dict]:
        """The run's tables and summary (``ticlip.eval.results.write_result_tables``) over every task
        in eval.jsonl, not only those selected now (``--tasks`` picks what to compute; the tables
        always show all that has been computed)."""
        return write_result_tables(self.out_dir, records, rows, [(s.index, s.label) for s in self.stream.steps],
                                   task_order=list(self.table), skipped_tasks=self.skipped_tasks)


# ------------------------------------------------------------------------- entry points
def evaluate_run(run_dir: str, config: EvalConfig | None = None, *, log: Log = _stderr,
                 progress: EvalProgress | None = None, dist: EvalDist | None = None) -> EvalOutcome:
    """Evaluate every finished step checkpoint of the run in ``run_dir``; results go into ``run_dir``.
    ``progress``: show models, tasks and encoding rate on stderr (``ticlip.progress.EvalProgress``).
    ``dist``: this rank under torchrun (``ticlip.eval.dist.init_eval_dist``); the ranks share the work."""
    from ticlip.data.stream import TimeStream
    from ticlip.run_layout import RunInfo

    config = config or EvalConfig()
    if not os.path.isdir(run_dir):
        raise TiclipError(f"no run directory {run_dir}")
    info = RunInfo.load(run_dir)
    stream = TimeStream.load(_stream_path(info.stream, run_dir))
    if not info.steps:
        raise TiclipError(f"run {info.name} has no trained steps yet (run.json lists none)")
    config = _on_rank_device(config, dist)
    evaluator = Evaluator(stream, config, run_dir, log, progress)  # checks the config and tasks first
    evaluator.dist = dist or SINGLE
    evaluator.shared = SharedResults.for_run(run_dir, evaluator)  # the run's step cache, if it has one
    wanted = set(config.steps) if config.steps is not None else None
    if wanted is not None:
        unknown = wanted - {s.index for s in info.steps}
        if unknown:
            raise TiclipError(f"run {info.name} has no step(s) {sorted(unknown)}; it has {[s.index for s in info.steps]}")
    models = []
    for rec in sorted(info.steps, key=lambda s: s.index):
        if wanted is not None and rec.index not in wanted:
            continue
        if not rec.finished:
            log(f"model step {rec.label}: training not finished, skipped")
            continue
        if rec.index >= len(stream.steps):
            raise TiclipError(f"run step {rec.index} has no step in stream {stream.name!r} ({len(stream.steps)} steps)")
        models.append(ModelRef(rec.index, rec.label, os.path.join(run_dir, rec.checkpoint), info.model))
    rows = [(s.index, s.label) for s in stream.steps]
    outcome = evaluator.run(models, rows)
    try:
        log_to_tracker(run_dir, info)
    except TiclipError as e:  # the results are written; a tracker missing on this machine only loses the copy
        log(f"warning: evaluation results not logged to {info.extra.get('report_to')}: {e}")
    return outcome


def log_to_tracker(run_dir: str, info) -> None:
    """The run's evaluation matrices and summary into the tracker it was trained with (run.json's
    ``extra.report_to``: TensorBoard or W&B; ``ticlip.loggers``); nothing when it had none. A missing
    back-end is a TiclipError naming the package."""
    from ticlip.eval.results import SUMMARY, matrix_files, read_summary, read_table, task_names, task_of_matrix_file
    import numpy as np

    from ticlip.loggers import open_tracker

    tracker = info.extra.get("report_to") or ""
    if not tracker:
        return
    names, _ = task_names(run_dir)
    matrices = {}
    for path in matrix_files(run_dir):
        values, rows, cols = read_table(path)
        E = np.full((len(cols), len(cols)), np.nan)  # rows of model steps not evaluated stay NaN
        for k, label in enumerate(rows):
            if label in cols:
                E[cols.index(label)] = values[k]
        matrices[task_of_matrix_file(path, names)] = (E, cols)
    summary_path = os.path.join(run_dir, SUMMARY)
    summary = read_summary(summary_path) if os.path.exists(summary_path) else {}
    log = open_tracker(tracker, run_dir, info.name, run_id=info.extra.get("wandb_id"), job_type="eval")
    try:
        log.log_evaluation(matrices, summary)
    finally:
        log.close()


def _on_rank_device(config: EvalConfig, dist: EvalDist | None) -> EvalConfig:
    """``config`` with plain ``cuda`` as this rank's GPU (``cuda:<LOCAL_RANK>``) under torchrun."""
    if dist is None or dist.device(config.device) == config.device:
        return config
    return config.replace(device=dist.device(config.device))


def _stream_path(path: str, run_dir: str) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    here = os.path.join(run_dir, path)
    return here if os.path.exists(here) else path


def evaluate_checkpoint(
    checkpoint: str, model: str, stream_path: str, out_dir: str | None = None,
    config: EvalConfig | None = None, *, label: str | None = None, log: Log = _stderr,
    progress: EvalProgress | None = None, dist: EvalDist | None = None,
) -> EvalOutcome:
    """Evaluate one outside open_clip checkpoint (e.g. a released TiC-CLIP ViT-B-16) on every step
    of a stream and on the static tasks; the matrix has one row, labelled ``label`` (default: the
    checkpoint's file name without extension)."""
    from ticlip.data.stream import TimeStream

    from ticlip.models import check_tag_model, checkpoint_file, checkpoint_label, is_hub_checkpoint

    config = config or EvalConfig()
    if not os.path.exists(checkpoint) and not is_hub_checkpoint(checkpoint):
        raise TiclipError(f"checkpoint {checkpoint} does not exist")
    name = label or checkpoint_label(checkpoint)
    if is_hub_checkpoint(checkpoint):  # hf-hub:ORG/REPO[/FILE] or MODEL:TAG: its file in the Hugging Face cache
        check_tag_model(checkpoint, model)
        checkpoint = checkpoint_file(checkpoint)
    stream = TimeStream.load(stream_path)
    out_dir = out_dir or os.path.join("evals", name)
    ref = ModelRef(0, name, os.path.abspath(checkpoint), model, outside=True)
    evaluator = Evaluator(stream, _on_rank_device(config, dist), out_dir, log, progress)
    evaluator.dist = dist or SINGLE
    return evaluator.run([ref], [(0, name)])


__all__ = ["EvalConfig", "EvalOutcome", "Evaluator", "ModelRef", "check_eval_config", "evaluate_checkpoint",
           "evaluate_run"]
