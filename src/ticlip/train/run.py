"""All steps of a training run: plan, initialise, train within budget, hand over to the method, save.

For each step t of the run (a contiguous range of the stream's steps):

1. the method plans the step (init: the run's initial weights or the previous step's; the mixture of
   typed sources); the budget gives its iterations (oracle: (t+1)·C) and the method's estimated
   extra cost (const-cosine's trunk charged as extra when the next step continues from it);
2. the model starts from random weights (seeded), the previous step's checkpoint (or, for
   const-cosine, its constant-LR trunk), or ``--init`` for the first step of the run; the step's LR
   schedule warms up for ``warmup`` iterations when it starts from the run's initial weights (the
   plan's init "initial": step 0, every Oracle and Restart step) and for ``warmup_later`` (default 0)
   when it is warm-started ("previous");
3. ``method.begin_step``; training over the seeded mixture (``ticlip.train.batches``) with the
   loop of ``ticlip.train.loop``; ``method.end_step`` (patching's interpolation, EWC's Fisher pass);
4. ``steps/<t>/checkpoint.pt`` (open_clip format), ``steps/<t>/step.json`` (plan, budget, facts),
   ``steps/<t>/method.pt`` (method state, latest step only) and ``run.json`` (a StepRecord per step).

One step is a ``ticlip.train.step.StepTrainer`` (phases: set up, resume, train, finish, rewind).

Resume: at chunk boundaries (every ``chunk_iterations``, at most every ``save_every_s`` seconds)
rank 0 writes ``steps/<t>/state.pt`` atomically: model, optimizer, scaler, loop position, phase,
RNG states and method state. The data of a chunk is a pure function of (seed, step, phase, chunk,
rank, worker), so a resumed run reaches the same weights as an uninterrupted one (tested on CPU).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ticlip.atomic import write_text_atomic
from ticlip.config import TrainConfig
from ticlip.errors import TiclipError
from ticlip.run_layout import RunInfo, file_fingerprint, json_fingerprint, step_dir
from ticlip.schema import ConfigError
from ticlip.train.step import PHASES, RunContext, RunRefused, StepTrainer

__all__ = ["PHASES", "RESUME_OVERRIDABLE", "CheckedRun", "RunRefused", "check_run", "default_name", "load_pinned_inputs",
           "load_resume_config", "make_method", "parse_steps", "pinned_inputs", "prepare_run", "resume_overrides_ignored", "run_finished", "train_run"]

# Settings a --resume command line may change (only those given on it; threads can change the float
# rounding of the resumed steps, so the saved thread count stays unless --threads is given).
RESUME_OVERRIDABLE = ("device", "progress", "report_to", "logs", "save_every_s", "threads")


# --------------------------------------------------------------------------- inputs
def parse_steps(stream, spec: str | None) -> list[int]:
    """Step indices named by ``spec``: "2016:2019" / "1:3" (inclusive), "2016:" / ":2018", "2017";
    None or "" means all steps."""
    n = len(stream.steps)
    if spec is None or str(spec).strip() in ("", ":"):
        return list(range(n))
    spec = str(spec).strip()
    try:
        if ":" in spec:
            a, b = spec.split(":", 1)
            lo = stream.step(a.strip()).index if a.strip() else 0
            hi = stream.step(b.strip()).index if b.strip() else n - 1
        else:
            lo = hi = stream.step(spec).index
    except TiclipError as e:
        raise ConfigError(f"bad --steps {spec!r}: {e}") from None
    if lo > hi:
        raise ConfigError(f"bad --steps {spec!r}: it starts after it ends (steps are {', '.join(stream.labels)})")
    return list(range(lo, hi + 1))


def make_method(cfg: TrainConfig):
    """The method object ``cfg.method`` names, with ``cfg.method_params``."""
    try:
        from ticlip.methods import get_method
    except ImportError as e:
        raise TiclipError(f"the methods registry is not available: {e}") from None
    try:
        return get_method(cfg.method, **(cfg.method_params or {}))
    except TiclipError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"method {cfg.method!r}: {e}") from None


def default_name(cfg: TrainConfig, stream) -> str:
    return f"{stream.name or 'stream'}-{cfg.method}-{cfg.model}-seed{cfg.seed}"


# --------------------------------------------------------------------------- run directory
def load_resume_config(cfg: TrainConfig, given: set[str] | None = None) -> TrainConfig:
    """The saved config of the run ``cfg`` names, with the ``RESUME_OVERRIDABLE`` settings the user
    gave now (``given``: the names given on the command line; None: the fields set on ``cfg``, so a
    default never replaces a saved value, e.g. the thread count that the weights depend on)."""
    if not cfg.name:
        if not cfg.stream:
            raise RunRefused("--resume needs the run's --name (or the --stream, --method, --model and --seed "
                             "that made its default name)")
        from ticlip.data.stream import TimeStream

        cfg = cfg.replace(name=default_name(cfg, TimeStream.load(cfg.stream)))
    run_dir = os.path.join(cfg.logs, cfg.name)
    cfg_path = os.path.join(run_dir, "config.yaml")
    if not os.path.exists(cfg_path):
        raise RunRefused(f"nothing to resume: no run {cfg.name!r} in {cfg.logs}; start it without --resume")
    saved = TrainConfig.from_yaml(cfg_path)
    given = set(cfg.model_fields_set) if given is None else set(given)
    overrides = {k: getattr(cfg, k) for k in RESUME_OVERRIDABLE if k in given or k == "logs"}
    return saved.replace(name=cfg.name, **overrides)


def pinned_inputs(cfg: TrainConfig, stream) -> dict:
    """The RunInfo fields that pin a new run's inputs: the stream's absolute root (or URL) and the
    fingerprint of its manifest, the --init file's absolute path (URLs as given) and fingerprint."""
    init, init_fp = None, ""
    if cfg.init:
        from ticlip.models import checkpoint_file, is_hub_checkpoint

        if is_hub_checkpoint(cfg.init):  # as given; pinned by the fingerprint of the cached file it resolves to
            init = cfg.init
            init_fp = file_fingerprint(checkpoint_file(cfg.init))
        elif "://" in cfg.init:
            init = cfg.init
        else:
            init = os.path.abspath(cfg.init)
            init_fp = file_fingerprint(init) if os.path.isfile(init) else ""  # check_run refuses it
    return dict(stream=stream.root, stream_fingerprint=json_fingerprint(stream.to_dict()), init=init,
                init_fingerprint=init_fp)


def load_pinned_inputs(cfg: TrainConfig, run_dir: str):
    """For --resume: (config, stream) with the stream and --init the run started with (run.json's
    absolute paths, not the config's relative ones resolved from today's directory). RunRefused when
    either changed since; runs from before inputs were pinned resume from run.json's stream root."""
    from ticlip.data.stream import TimeStream

    if not os.path.exists(RunInfo.path(run_dir)):
        return cfg, TimeStream.load(cfg.stream)
    info = RunInfo.load(run_dir)
    where = f"run {cfg.name!r} ({RunInfo.path(run_dir)})"
    try:
        stream = TimeStream.load(info.stream or cfg.stream)
    except TiclipError as e:
        raise RunRefused(f"{where}: cannot load the stream it was started with: {e}") from None
    if info.stream_fingerprint and json_fingerprint(stream.to_dict()) != info.stream_fingerprint:
        raise RunRefused(f"{where}: the stream {info.stream} changed since the run started (its stream.json "
                         f"differs from the one pinned in run.json); restore it to resume, or start a new run "
                         f"with another --name")
    if info.init:
        if info.init_fingerprint:
            from ticlip.models import checkpoint_file, is_hub_checkpoint

            try:  # a hub name: its cached file (HubError, one line, when it is neither cached nor downloadable)
                init_file = checkpoint_file(info.init) if is_hub_checkpoint(info.init) else info.init
            except TiclipError as e:
                raise RunRefused(f"{where}: its --init checkpoint: {e}") from None
            if not os.path.isfile(init_file):
                raise RunRefused(f"{where}: its --init checkpoint {info.init} is gone; put it back to resume, "
                                 f"or start a new run with another --name")
            if file_fingerprint(init_file) != info.init_fingerprint:
                raise RunRefused(f"{where}: its --init checkpoint {info.init} changed since the run started; "
                                 f"restore it to resume, or start a new run with another --name")
        cfg = cfg.replace(init=info.init)
    return cfg, stream


def prepare_run(cfg: TrainConfig, *, resume: bool, stream) -> tuple[str, TrainConfig, RunInfo]:
    """Check the run directory against ``resume``; returns (run_dir, config with its name, info).

    Without --resume an existing run, finished or not, is refused. Nothing is written here."""
    name = cfg.name or default_name(cfg, stream)
    run_dir = os.path.join(cfg.logs, name)
    exists = os.path.exists(RunInfo.path(run_dir)) or os.path.exists(os.path.join(run_dir, "config.yaml"))
    fresh = RunInfo(name=name, model=cfg.model, method=cfg.method, seed=cfg.seed, label=cfg.label or "",
                    **pinned_inputs(cfg, stream))
    if resume:
        info = RunInfo.load(run_dir) if os.path.exists(RunInfo.path(run_dir)) else fresh
        return run_dir, cfg.replace(name=name), info
    if exists:
        if run_finished(run_dir):
            raise RunRefused(
                f"run {name!r} already finished in {run_dir}: choose another --name "
                f"(or delete that directory to train it again)"
            )
        raise RunRefused(
            f"run {name!r} already exists in {run_dir} and is not finished: pass --resume to continue "
            f"it, or --name NEW to start a new run"
        )
    return run_dir, cfg.replace(name=name), fresh


def run_finished(run_dir: str) -> bool:
    """Whether the run in ``run_dir`` trained every step it planned."""
    try:
        info = RunInfo.load(run_dir)
    except TiclipError:
        return False
    wanted = info.extra.get("steps_planned") or []
    done = {s.index for s in info.steps if s.finished}
    return bool(wanted) and set(wanted) <= done


def resume_overrides_ignored(cfg: TrainConfig, given: set[str]) -> list[str]:
    """Names of explicitly given settings that --resume ignores (the run's config wins)."""
    return sorted(k for k in given if k not in RESUME_OVERRIDABLE and k not in ("name", "resume", "config"))


# --------------------------------------------------------------------------- checks
@dataclass
class CheckedRun:
    """What ``check_run`` worked out: the method, the steps to train, schedule and budget."""

    method: Any
    indices: list[int]
    schedule: Any  # ScheduleConfig
    budget: Any  # Budget
    macs_per_pair: float
    global_batch: int


def check_run(cfg: TrainConfig, stream, *, world_size: int = 1, device: str = "cpu", method=None) -> CheckedRun:
    """Everything a run needs that can be checked without training or writing: the settings, the model
    name, ``--init``, the step range, the method and its parameters, every step's plan, budget and
    schedule. ConfigError (one line) for the first problem. ``ticlip run`` calls this for every run of
    an experiment before the first one trains; ``train_run`` calls it on every rank before writing."""
    from ticlip.models import check_init_checkpoint, model_config
    from ticlip.train.budget import Budget, macs_per_pair
    from ticlip.train.schedule import ScheduleConfig, step_position

    cfg.validate()
    model_config(cfg.model)
    if cfg.init is not None:  # loads weights-only and checks it fits the model, without building it
        try:
            check_init_checkpoint(cfg.init, cfg.model)
        except TiclipError as e:
            raise ConfigError(f"--init {e}") from None
    indices = parse_steps(stream, cfg.steps)
    method = method if method is not None else make_method(cfg)
    sched_cfg = ScheduleConfig(cfg.schedule, cfg.lr, cfg.warmup, cfg.warmup_every_step, cfg.decay_fraction,
                               cfg.warmup_later, cfg.anneal, cfg.rsqrt_timescale, cfg.peak_decay)
    if cfg.precision == "fp16" and not str(device).startswith("cuda"):
        raise ConfigError("precision fp16 needs a CUDA GPU (it uses a gradient scaler); use bf16 or fp32 on CPU")
    from ticlip.train.updates import UpdateSettings, check_update

    check_update(UpdateSettings.of(cfg), method, cfg.model)  # an update the method cannot train with (one line)
    mpp = macs_per_pair(cfg.model)
    if cfg.budget_unit == "memory-adjusted":  # FoMo-in-Flux's MAFs, in full fine-tuning's MACs
        from ticlip.train.memory_budget import memory_adjusted_macs_per_pair

        mpp = memory_adjusted_macs_per_pair(cfg.model, UpdateSettings.of(cfg), cfg.batch_size)
    global_batch = cfg.batch_size * cfg.accum_freq * world_size
    n_steps = len(stream.steps)
    if cfg.total_macs is not None:
        budget = Budget(cfg.total_macs, n_steps, mpp, global_batch, cfg.budget_scale)
    else:
        total = float(cfg.iterations_per_step) * global_batch * mpp * n_steps
        budget = Budget(total, n_steps, mpp, global_batch, cfg.budget_scale)
    step_sizes = stream.step_sizes
    plans = []
    for t in indices:  # every step's plan, budget and schedule must work before anything is written
        plan = method.plan(t, step_sizes)  # its init decides the warmup: "initial" warmup, "previous" warmup_later
        start = "initial" if plan.init == "initial" else "previous"  # "trained" is a warm start too
        sched_cfg.for_step(budget.plan_step(method, t, schedule=sched_cfg, stream=stream).iterations, start,
                           step_position(method, budget, t, step_sizes))  # the meta schedules' place in the run
        plans.append(plan)
    from ticlip.train.batches import check_pools

    check_pools(plans, f"method {method.name}")  # a pretraining pool's stream or shards (ticlip.methods.mixture)
    return CheckedRun(method, indices, sched_cfg, budget, mpp, global_batch)


# --------------------------------------------------------------------------- the run
def train_run(cfg: TrainConfig, *, resume: bool = False, method=None, given: set[str] | None = None) -> RunInfo:
    """Train every step of ``cfg.steps`` (all by default); returns the run's RunInfo.

    ``method`` may be a Method object (library use); by default ``cfg.method`` is looked up in
    the registry. ``given``: on --resume, the settings given on the command line (see
    ``load_resume_config``). Everything is checked before anything is written; then rank 0 holds the
    run directory's lock (``ticlip.locking.DirLock``) until the run ends. Under torchrun every rank
    calls this; only rank 0 writes files.
    """
    import torch

    from ticlip.data.stream import TimeStream
    from ticlip.locking import DirLock
    from ticlip.train import dist as D

    dinfo = D.init_distributed(cfg.device)
    run = None
    lock = None
    try:
        # Every rank checks everything before rank 0 writes anything (barrier below).
        as_given = None  # on --resume: the saved config, whose stream and init stay as the user gave them
        if resume:
            cfg = as_given = load_resume_config(cfg, given)
            cfg, stream = load_pinned_inputs(cfg, os.path.join(cfg.logs, cfg.name))
        cfg.validate()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if not resume:
            stream = TimeStream.load(cfg.stream)
        run_dir, cfg, info = prepare_run(cfg, resume=resume, stream=stream)
        checked = check_run(cfg, stream, world_size=dinfo.world_size, device=dinfo.device, method=method)
        method, indices, sched_cfg, budget = checked.method, checked.indices, checked.schedule, checked.budget
        mpp, global_batch = checked.macs_per_pair, checked.global_batch
        if cfg.report_to:
            from ticlip.loggers import require_tracker

            require_tracker(cfg.report_to)
        run = RunContext(cfg, stream, method, dinfo, run_dir, info, budget, sched_cfg, mpp, D.make_clip_loss(dinfo),
                         indices)
        refused = None
        if dinfo.is_main:
            try:
                lock = DirLock(run_dir, what="run").acquire()
                prepare_run(cfg, resume=resume, stream=stream)  # again: another process may have finished it
            except TiclipError as e:
                refused = e
        if not _all_ranks_ok(dinfo, refused is None):
            raise refused or RunRefused(f"run {cfg.name!r}: rank 0 could not take the run directory's lock")
        D.barrier(dinfo)
        if dinfo.is_main:
            saved = cfg if as_given is None else cfg.replace(stream=as_given.stream, init=as_given.init)
            saved.to_yaml(os.path.join(run_dir, "config.yaml"))
            info.extra.update(
                steps_planned=indices, world_size=dinfo.world_size, global_batch_size=global_batch,
                macs_per_pair=mpp, budget=budget.to_dict(), budget_unit=cfg.budget_unit, update=cfg.update,
            )
            info.save(run_dir)
            stream_copy = os.path.join(run_dir, "stream.json")
            if not os.path.exists(stream_copy):
                write_text_atomic(stream_copy, json.dumps(stream.to_dict(), indent=2, ensure_ascii=False) + "\n")
            if cfg.report_to:  # training scalars at the global iteration (ticlip.loggers)
                from ticlip.loggers import open_tracker

                run.tb = open_tracker(cfg.report_to, run_dir, info.name, run_id=info.extra.get("wandb_id"),
                                      config=saved.model_dump(mode="json"))
                info.extra["report_to"] = cfg.report_to  # evaluation logs into the same tracker
                if cfg.report_to == "wandb":
                    info.extra["wandb_id"] = run.tb.run_id
                info.save(run_dir)
        D.barrier(dinfo)
        torch.manual_seed(cfg.seed)
        done = {s.index for s in info.steps if s.finished}
        loaded_method_state = False
        for t in indices:
            if t in done:
                _remove(os.path.join(step_dir(run_dir, t), "state.pt"), dinfo)
                continue
            if not loaded_method_state:
                _load_method_state(run, t)
                loaded_method_state = True
            StepTrainer(run, t).run()
            D.barrier(dinfo)
        return RunInfo.load(run_dir) if dinfo.is_main else info
    finally:
        if run is not None and run.tb is not None:
            run.tb.close()
        if lock is not None:
            lock.release()
        D.shutdown(dinfo)


def _all_ranks_ok(dinfo, ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (one all-reduce under DDP), so that a refusal on rank 0 stops
    every rank instead of leaving the others at a barrier."""
    if dinfo.world_size <= 1:
        return ok
    import torch
    import torch.distributed as dist

    flag = torch.tensor([0 if ok else 1], device=dinfo.device)
    dist.all_reduce(flag)
    return int(flag.item()) == 0


def _remove(path: str, dinfo) -> None:
    if dinfo.is_main and os.path.exists(path):
        os.remove(path)


def _load_method_state(run: RunContext, t: int) -> None:
    from ticlip.models import read_checkpoint

    path = os.path.join(step_dir(run.run_dir, t - 1), "method.pt") if t > 0 else None
    if path and os.path.exists(path):
        run.method.load_state_dict(read_checkpoint(path, map_location=run.dist.device, what="method state"))
