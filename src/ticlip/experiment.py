"""Experiments: one YAML file describing stream, model, budget, methods, seeds and evaluation, run by
one command (``ticlip run CONFIG.yaml``): build the stream if missing → train each run → evaluate → report.

Lists expand into a sweep: ``methods`` × ``seeds`` × every list in ``sweep`` (e.g. ``sweep: {lr: [1e-3,
5e-4]}``). An entry of ``methods`` may name a *variant* instead of a method: a method with its own
parameters and training settings (``variants: {ties-trained: {method: merge, params: {operator: ties},
train: {schedule: wsd}}}``), reported as its own row under the variant's name. Each run lives in ``<logs>/<experiment name>/<run name>/`` with its resolved config; finished
runs are skipped, interrupted ones resumed, so re-running an experiment only does what is missing.
"""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import Field, field_validator

from ticlip.config import TrainConfig
from ticlip.errors import TiclipError
from ticlip.schema import ConfigError, Schema, apply_overrides, read_yaml_mapping

PRESET_DIR_ENV = "TICLIP_CONFIGS"
# Run settings an experiment sets through its own keys, never through 'train' or 'sweep'.
RESERVED_TRAIN_KEYS = ("stream", "method", "seed", "name", "logs", "method_params", "label")


class StreamSpec(Schema):
    """Where the stream lives and, when it is missing, how to build it."""

    path: str = Field("data/emoji", description="stream directory (or URL) holding stream.json")
    source: str | None = Field("emoji", description="a source name or a table path to build the stream from when "
                                                    "it is missing; null: the stream must exist")
    build: dict[str, Any] = Field(default_factory=dict, description="build settings (BuildConfig keys)")
    options: dict[str, Any] = Field(default_factory=dict, description="source options (e.g. font, num_pairs)")


def _as_list(value):
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value


def _check_training_keys(value: dict) -> dict:
    """``value``'s keys must be TrainConfig settings an experiment may set through 'train'/'sweep'."""
    for key in value:
        k = key.replace("-", "_")
        if k in RESERVED_TRAIN_KEYS:
            raise ValueError(f"set {k!r} through the experiment's own keys (methods, variants, seeds, name, logs, "
                             f"method_params, stream), not 'train'/'sweep'")
        if k not in TrainConfig.model_fields:
            known = sorted(set(TrainConfig.model_fields) - set(RESERVED_TRAIN_KEYS))
            raise ValueError(f"{key!r} is not a training setting; known: {', '.join(known)}")
    return value


class Variant(Schema):
    """A named configuration of a method: its parameters and training settings that differ from the
    experiment's. Its runs are named and reported under the variant's name."""

    method: str = Field(..., description="the method this variant configures")
    params: dict[str, Any] = Field(default_factory=dict, description="method parameters, over the experiment's "
                                                                     "method_params of that method")
    train: dict[str, Any] = Field(default_factory=dict, description="training settings (TrainConfig keys) over "
                                                                    "the experiment's 'train'")

    @field_validator("train")
    @classmethod
    def _training_keys(cls, value: dict) -> dict:
        return _check_training_keys(value)


class ExperimentConfig(Schema):
    """An experiment: stream, shared training settings, methods x seeds x sweep, evaluation, report."""

    name: str = Field("experiment", description="experiment name; results go to LOGS/NAME")
    stream: StreamSpec = Field(default_factory=StreamSpec, description="the stream (a path, or a section)")
    train: dict[str, Any] = Field(default_factory=dict, description="training settings shared by every run "
                                                                    "(TrainConfig keys)")
    methods: list[str] = Field(default_factory=lambda: ["cumulative-all"], min_length=1,
                               description="methods (or names of variants) to train")
    variants: dict[str, Variant] = Field(default_factory=dict, description="named method configurations that "
                                                                           "'methods' may list")
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="parameters per method name")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="seeds to train")
    sweep: dict[str, list] = Field(default_factory=dict, description="TrainConfig key -> values to sweep")
    eval: dict[str, Any] = Field(default_factory=dict, description="evaluation settings (EvalConfig keys); "
                                                                   "enabled: false skips evaluation")
    pools: list[StreamSpec] = Field(default_factory=list, description="other streams the methods read (e.g. a "
                                    "mixture's pool_stream): each is built like 'stream' when it is missing")
    start: dict[str, Any] | None = Field(None, description="make the pretrained start when train.init does not exist "
                                         "yet: `ticlip model make-start` settings (pool, max_pairs, views, steps, "
                                         "batch_size, lr, seed) written to train.init (docs/PRETRAINED.md)")
    report: bool = Field(True, description="write report.html over the experiment's runs")
    reference: str | None = Field(None, description="the method or variant every other is compared with in the "
                                  "report (paired by seed); default cumulative-all when it is among the methods")
    logs: str = Field("runs", description="where experiments are written")
    parallel: int = Field(1, ge=1, description="training processes at once")

    @field_validator("stream", mode="before")
    @classmethod
    def _stream_path_only(cls, value):
        return {"path": value, "source": None} if isinstance(value, str) else value

    @field_validator("pools", mode="before")
    @classmethod
    def _pool_paths_only(cls, value):
        return [{"path": v, "source": None} if isinstance(v, str) else v for v in _as_list(value or [])]

    @field_validator("methods", "seeds", mode="before")
    @classmethod
    def _scalar_to_list(cls, value):
        return _as_list(value)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("must be a non-empty name without '/'")
        return value

    @field_validator("sweep")
    @classmethod
    def _sweep_lists(cls, value: dict) -> dict:
        for key, values in value.items():
            if not values:
                raise ValueError(f"sweep key {key!r} must map to a non-empty list")
        return value

    @field_validator("train", "sweep")
    @classmethod
    def _training_keys(cls, value: dict) -> dict:
        return _check_training_keys(value)

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict) -> dict:
        for name in value:
            if not name or "/" in name or name != name.strip():
                raise ValueError(f"variant name {name!r} must be a non-empty name without '/' or spaces around it")
        return value

    @property
    def out_dir(self) -> str:
        return os.path.join(self.logs, self.name)

    @property
    def eval_enabled(self) -> bool:
        return bool(self.eval.get("enabled", True))


def preset_path(name_or_path: str) -> str:
    """A config path as given, or a preset name from configs/ (``emoji-cpu`` → configs/emoji-cpu.yaml)."""
    if os.path.exists(name_or_path):
        return name_or_path
    candidates = []
    # ./configs (a checkout), then the presets shipped inside the package (any install)
    for base in filter(None, [os.environ.get(PRESET_DIR_ENV), "configs", os.path.join(os.path.dirname(__file__), "presets")]):
        for ext in ("", ".yaml", ".yml"):
            candidates.append(os.path.join(base, name_or_path + ext))
    for c in candidates:
        if os.path.isfile(c):
            return os.path.normpath(c)
    raise ConfigError(f"no config file or preset {name_or_path!r} (looked in ./configs and the presets shipped with "
                      f"ticlip: {', '.join(list_presets())})")


def list_presets() -> list[str]:
    folder = os.path.join(os.path.dirname(__file__), "presets")
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []


def load_experiment(path: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read an experiment YAML (or preset name); ``overrides`` are ``KEY=VALUE`` with dotted keys."""
    path = preset_path(path)
    d = apply_overrides(read_yaml_mapping(path), overrides)
    return ExperimentConfig.load(d, source=path)


# ---------------------------------------------------------------------------------- the sweep
@dataclass
class PlannedRun:
    name: str
    config: TrainConfig

    @property
    def run_dir(self) -> str:
        return os.path.join(self.config.logs, self.config.name)


def _slug(value: Any) -> str:
    return str(value).replace("/", "_").replace(" ", "")


def expand(exp: ExperimentConfig) -> list[PlannedRun]:
    """Every (method or variant, seed, sweep point) as a TrainConfig, named
    ``<method or variant>[-<key><value>...]-s<seed>``. A variant's settings apply over ``train``, and the
    sweep point over both; its parameters over ``method_params`` of its method."""
    keys = sorted(exp.sweep)
    points = list(itertools.product(*(exp.sweep[k] for k in keys))) if keys else [()]
    runs = []
    for entry in exp.methods:
        variant = exp.variants.get(entry)
        method = variant.method if variant else entry
        params = dict(exp.method_params.get(method, {}), **(variant.params if variant else {}))
        for point in points:
            for seed in exp.seeds:
                base = {k.replace("-", "_"): copy.deepcopy(v) for k, v in exp.train.items()}
                if variant:
                    base.update({k.replace("-", "_"): copy.deepcopy(v) for k, v in variant.train.items()})
                base.update({k.replace("-", "_"): v for k, v in zip(keys, point)})
                tag = "".join(f"-{k.replace('_', '')}{_slug(v)}" for k, v in zip(keys, point) if len(exp.sweep[k]) > 1)
                name = f"{entry}{tag}-s{seed}"
                base.update(stream=exp.stream.path, method=method, seed=int(seed), name=name, logs=exp.out_dir,
                            method_params=params, label=entry if variant else None)
                # identical step trainings of the experiment's runs are done once (train.step_cache: null: off)
                base.setdefault("step_cache", os.path.join(exp.out_dir, "step-cache"))
                where = f"experiment {exp.name}, run {name}: train"
                cfg = TrainConfig.load(base, source=where)
                try:
                    cfg.validate()
                except ConfigError as e:
                    raise ConfigError(f"{where}: {e}") from None
                runs.append(PlannedRun(name, cfg))
    return runs


def run_state(run: PlannedRun) -> str:
    """'new', 'partial' (interrupted: resume it) or 'finished'."""
    from ticlip.train.run import run_finished

    if run_finished(run.run_dir):
        return "finished"
    if os.path.exists(os.path.join(run.run_dir, "config.yaml")):
        return "partial"
    return "new"


# ---------------------------------------------------------------------------------- stages
def _stream_exists(spec: StreamSpec) -> bool:
    from ticlip.data.stream import MANIFEST_NAME

    return os.path.exists(os.path.join(spec.path, MANIFEST_NAME)) or "://" in spec.path


def ensure_stream(spec: StreamSpec, log: Callable[[str], None]):
    """Load the stream; build it first when it is missing and a source is given (the same entry
    point as ``ticlip data build``, so both record the same provenance)."""
    from ticlip.data.stream import TimeStream

    if _stream_exists(spec):
        return TimeStream.load(spec.path)
    if not spec.source:
        raise TiclipError(f"no stream at {spec.path} and no 'stream.source' to build it from")
    from ticlip.data.build import build_stream_from

    log(f"building stream {spec.path} from {spec.source} ...")
    return build_stream_from(spec.source, spec.path, build=dict(spec.build), options=dict(spec.options))


# ---------------------------------------------------------------------------------- validation
def validate_experiment(exp: ExperimentConfig, source: str = "experiment") -> list["PlannedRun"]:
    """Check every section before anything is written or trained; returns the planned runs.

    stream (exists, or its source/table, build settings and options are valid), train and sweep
    (every run's TrainConfig, its model name and --init file), methods and their parameters, eval
    (settings and task names), report. Any error is a ConfigError naming the section and key."""
    from ticlip.methods import check_method_params, list_methods
    from ticlip.models import check_init_checkpoint, is_hub_checkpoint, model_config

    for where, spec in [("stream", exp.stream)] + [(f"pools[{i}]", p) for i, p in enumerate(exp.pools)]:
        if not _stream_exists(spec):
            if not spec.source:
                raise ConfigError(f"{source}: no stream at {spec.path} and no '{where}.source' to build it from")
            from ticlip.data.build import check_build_request

            check_build_request(spec.source, spec.build, spec.options, where=f"{source}: {where}")
    known = list_methods()
    clash = [v for v in exp.variants if v in known]
    if clash:
        raise ConfigError(f"{source}: variants: {', '.join(clash)} is the name of a method; give the variant "
                          "another name")
    unknown = [m for m in list(exp.method_params) + [v.method for v in exp.variants.values()] if m not in known]
    unknown += [m for m in exp.methods if m not in known and m not in exp.variants]
    if unknown:
        variants = f"; variants: {', '.join(exp.variants)}" if exp.variants else ""
        raise ConfigError(f"{source}: unknown method(s) {', '.join(dict.fromkeys(unknown))}; known: {', '.join(known)}"
                          f"{variants}")
    for method, params in exp.method_params.items():
        check_method_params(method, params, source=f"{source}: method_params.{method}")
    for name, variant in exp.variants.items():
        check_method_params(variant.method, dict(exp.method_params.get(variant.method, {}), **variant.params),
                            source=f"{source}: variants.{name}.params")
    if exp.reference is not None and exp.reference not in exp.methods:
        raise ConfigError(f"{source}: reference: {exp.reference!r} is not among the methods "
                          f"({', '.join(exp.methods)}); name one of them")
    runs = expand(exp)
    for model in sorted({r.config.model for r in runs}):
        try:
            model_config(model)
        except TiclipError as e:
            raise ConfigError(f"{source}: train.model: {e}") from None
    start = start_config(exp, runs, source)
    for init, model in sorted({(r.config.init, r.config.model) for r in runs if r.config.init}):
        if start is not None and init == start.out and not os.path.exists(init):
            continue  # made by the experiment before anything trains, and checked then
        if not os.path.exists(init) and not is_hub_checkpoint(init):
            raise ConfigError(f"{source}: train.init: checkpoint {init} does not exist")
        try:  # loads (weights only) and fits the model: before the stream is built or anything trains
            check_init_checkpoint(init, model)
        except TiclipError as e:
            raise ConfigError(f"{source}: train.init: {e}") from None
    if exp.eval_enabled:
        eval_config(exp, source)
    if _inputs_exist(exp, start):  # else the runs are checked once the streams and the start are made
        check_runs(runs, ensure_stream(exp.stream, log=lambda s: None), source)
    return runs


def _inputs_exist(exp: ExperimentConfig, start) -> bool:
    """Whether the streams (the experiment's and its pools) and the pretrained start exist already."""
    return all(_stream_exists(spec) for spec in [exp.stream, *exp.pools]) and (
        start is None or os.path.exists(start.out))


def start_config(exp: ExperimentConfig, runs: list["PlannedRun"], source: str = "experiment"):
    """The experiment's ``start`` section as a ``ticlip.pretrained.StartConfig`` writing to the runs' one
    train.init (None without a start section); refused in one line when it cannot be made."""
    if exp.start is None:
        return None
    from ticlip.pretrained import START_MODEL, StartConfig, check_start_config

    inits = sorted({r.config.init or "" for r in runs})
    if len(inits) != 1 or not inits[0]:
        raise ConfigError(f"{source}: start: needs one train.init for every run (the checkpoint it writes); got "
                          f"{', '.join(repr(i) for i in inits) or 'none'}")
    models = sorted({r.config.model for r in runs})
    if models != [START_MODEL]:
        raise ConfigError(f"{source}: start: makes model {START_MODEL}, but train.model is {', '.join(models)}: "
                          f"set train.model: {START_MODEL}")
    if "out" in exp.start:
        raise ConfigError(f"{source}: start.out: the start is written to train.init ({inits[0]}); drop start.out")
    cfg = StartConfig.load(dict(exp.start, out=inits[0]), source=f"{source}: start")
    try:
        check_start_config(cfg)
    except TiclipError as e:
        raise ConfigError(f"{source}: start: {e}") from None
    return cfg


def ensure_start(cfg, runs: list["PlannedRun"], log: Callable[[str], None]) -> None:
    """Make the pretrained start ``cfg`` (``start_config``; None: none asked for) when train.init does not
    exist yet, then check it fits the model (as validation does for an existing train.init)."""
    if cfg is None or os.path.exists(cfg.out):
        return
    from ticlip.models import check_init_checkpoint
    from ticlip.pretrained import make_start

    log(f"making the pretrained start {cfg.out} (ticlip model make-start) ...")
    make_start(cfg, log=log)
    check_init_checkpoint(cfg.out, runs[0].config.model)


def check_runs(runs: list["PlannedRun"], stream, source: str = "experiment") -> None:
    """Every run's plan, budget and schedule on ``stream`` (e.g. warmup longer than a step)."""
    from ticlip.train.run import check_run

    for r in runs:
        try:
            check_run(r.config, stream)
        except TiclipError as e:
            raise ConfigError(f"{source}: run {r.name}: {e}") from None


def eval_config(exp: ExperimentConfig, source: str = "experiment"):
    """The experiment's validated EvalConfig (its 'eval' section without 'enabled')."""
    from ticlip.eval.config import EvalConfig, check_eval_config

    where = f"{source}: eval"
    enabled = exp.eval.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: must be true or false (got {enabled!r})")
    cfg = EvalConfig.load({k: v for k, v in exp.eval.items() if k != "enabled"}, source=where)
    check_eval_config(cfg, source=where)
    return cfg


def _train_in_process(run: PlannedRun, resume: bool) -> None:
    from ticlip.train.run import train_run

    train_run(run.config, resume=resume)


def _checked(run: PlannedRun, streams: dict):
    """(stream, ``check_run``'s CheckedRun) of a planned run; ``streams`` caches loaded streams by path."""
    from ticlip.data.stream import TimeStream
    from ticlip.train.run import check_run

    stream = streams.get(run.config.stream)
    if stream is None:
        stream = streams[run.config.stream] = TimeStream.load(run.config.stream)
    return stream, check_run(run.config, stream)


def _expected_macs(run: PlannedRun, streams: dict) -> float:
    """The run's planned training MACs with the method's estimated extras (Oracle's larger steps, LwF's
    teacher passes, EWC's Fisher pass), from its budget: the order in which runs start."""
    stream, checked = _checked(run, streams)
    return sum(checked.budget.plan_step(checked.method, t, schedule=checked.schedule, stream=stream).total_macs
               for t in checked.indices)


def _run_works(runs: list[PlannedRun]):
    """Every run's planned iterations per step (the budget's plan: Oracle's larger steps, const-cosine's
    trunk), for the progress display (``ticlip.progress``)."""
    from ticlip.progress import RunWork, StepWork

    streams: dict[str, Any] = {}
    works = []
    for run in runs:
        stream, checked = _checked(run, streams)
        steps = []
        for t in checked.indices:
            iterations = checked.budget.plan_step(checked.method, t, schedule=checked.schedule, stream=stream).iterations
            continues = checked.budget.next_step_continues(checked.method, t, stream)
            steps.append(StepWork(t, stream.steps[t].label, iterations,
                                  checked.schedule.extra_iterations(iterations, continues)))
        works.append(RunWork(run.name, run.run_dir, steps, len(stream.steps)))
    return works


def _show_progress(runs: list[PlannedRun]) -> bool:
    """The experiment's ``train.progress`` setting (default true) turns the live display on or off."""
    return all(r.config.progress for r in runs)


def _train_subprocesses(runs: list[tuple[PlannedRun, bool]], parallel: int, log) -> list[str]:
    """Train runs in up to ``parallel`` child processes (``ticlip train --config``), CPU threads split
    evenly; the most expensive runs (oracle's t×C) start first so the processes finish together.

    The children's output goes to ``LOGS/.NAME.log``; the terminal shows one line per active run and an
    overall bar with an ETA, read from the files the children write (``ticlip.progress``)."""
    from ticlip.progress import TrainingProgress

    threads = max(1, (os.cpu_count() or 1) // parallel)
    # Longest first (the LPT rule): the processes then finish at about the same time.
    streams: dict[str, Any] = {}
    pending = sorted(runs, key=lambda item: -_expected_macs(item[0], streams))
    active: list[tuple[PlannedRun, subprocess.Popen, Any]] = []
    failed = []
    shown = _show_progress([r for r, _ in runs])
    progress = TrainingProgress(_run_works([r for r, _ in pending]), desc=f"training ({parallel} processes)",
                                slots=min(parallel, len(pending)), enabled=shown)
    try:
        while pending or active:
            while pending and len(active) < parallel:
                run, resume = pending.pop(0)
                os.makedirs(run.config.logs, exist_ok=True)
                cfg_path = os.path.join(run.config.logs, f".{run.name}.yaml")
                run.config.replace(progress=False, threads=run.config.threads or threads).to_yaml(cfg_path)
                cmd = [sys.executable, "-m", "ticlip.cli", "train", "--config", cfg_path]
                if resume:
                    cmd += ["--resume", "--name", run.name, "--logs", run.config.logs]
                env = dict(os.environ, OMP_NUM_THREADS=str(threads))
                logf = open(os.path.join(run.config.logs, f".{run.name}.log"), "ab")
                active.append((run, subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT), logf))
            progress.poll([r.name for r, _, _ in active])
            time.sleep(0.5)
            for item in list(active):
                run, proc, logf = item
                if proc.poll() is None:
                    continue
                logf.close()
                active.remove(item)
                if proc.returncode != 0:
                    failed.append(run.name)
                    progress.drop(run.name)
                    progress.write(f"  {run.name} FAILED (exit {proc.returncode}); see {logf.name}")
                else:
                    progress.write(f"  {run.name} trained")
        progress.poll([], force=True)
    except BaseException:
        for _, proc, _ in active:  # an interrupted experiment leaves resumable runs, not orphans
            proc.terminate()
        raise
    finally:
        progress.close()
    return failed


def _train_in_order(runs: list[tuple[PlannedRun, bool]], log) -> None:
    """Train runs one after the other in this process; with ``train.progress`` on, a background thread
    shows the run's step progress and the overall bar (the trainer's own bar is off meanwhile, and its
    lines are printed above the display)."""
    import threading

    from ticlip.progress import TrainingProgress

    if not _show_progress([r for r, _ in runs]):
        for i, (r, resume) in enumerate(runs, 1):
            log(f"[{i}/{len(runs)}] training {r.name}{' (resuming)' if resume else ''}")
            _train_in_process(r, resume)
        return
    progress = TrainingProgress(_run_works([r for r, _ in runs]), desc="training", slots=1)
    current: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(0.5):
            progress.poll(list(current))

    thread = threading.Thread(target=poll, name="ticlip-progress", daemon=True)
    thread.start()
    try:
        for i, (r, resume) in enumerate(runs, 1):
            progress.write(f"[{i}/{len(runs)}] training {r.name}{' (resuming)' if resume else ''}")
            current[:] = [r.name]
            with progress.display.redirect_stderr():
                _train_in_process(PlannedRun(r.name, r.config.replace(progress=False)), resume)
            current[:] = []
            progress.write(f"  {r.name} trained")
    finally:
        stop.set()
        thread.join()
        progress.poll([], force=True)
        progress.close()


@dataclass
class ExperimentResult:
    out_dir: str
    runs: list[str]
    trained: list[str]
    skipped: list[str]
    failed: list[str]
    report: str | None
    table: str
    seconds: float


def run_experiment(exp: ExperimentConfig, *, log: Callable[[str], None] | None = None,
                   train: bool = True, evaluate: bool = True, report: bool = True,
                   source: str | None = None) -> ExperimentResult:
    """Build (if needed) → train every run of the sweep → evaluate → report; returns what happened.
    ``source`` names the experiment in error messages (its YAML file). Every section is validated
    first; then the experiment directory's lock is held to the end (a second ``ticlip run`` of the
    same experiment is refused at once). Each run's trainer locks that run's own directory."""
    from ticlip.locking import DirLock

    source = source or f"experiment {exp.name}"
    runs = validate_experiment(exp, source)  # every section, before anything is written
    with DirLock(exp.out_dir, what="experiment"):
        return _run_experiment(exp, log=log, train=train, evaluate=evaluate, report=report, source=source,
                               runs=runs)


def _run_experiment(exp: ExperimentConfig, *, log: Callable[[str], None] | None, train: bool, evaluate: bool,
                    report: bool, source: str, runs: list[PlannedRun]) -> ExperimentResult:
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.time()
    ecfg = eval_config(exp, source) if evaluate and exp.eval_enabled else None
    start = start_config(exp, runs, source)
    made = not _inputs_exist(exp, start)
    stream = ensure_stream(exp.stream, log)
    for pool in exp.pools:
        ensure_stream(pool, log)
    ensure_start(start, runs, log)
    if made:  # the runs could not be checked against streams or a start that did not exist yet
        check_runs(runs, stream, source)
    os.makedirs(exp.out_dir, exist_ok=True)
    exp.to_yaml(os.path.join(exp.out_dir, "experiment.yaml"))
    todo, skipped = [], []
    for r in runs:
        state = run_state(r)
        if state == "finished":
            skipped.append(r.name)
        else:
            todo.append((r, state == "partial"))
    log(f"experiment {exp.name}: {len(runs)} runs ({len(skipped)} finished already, {len(todo)} to train)")
    failed: list[str] = []
    if train and todo:
        if exp.parallel > 1 and len(todo) > 1:
            failed = _train_subprocesses(todo, exp.parallel, log)
        else:
            _train_in_order(todo, log)
    done_runs = [r for r in runs if r.name not in failed and run_state(r) == "finished"]
    if ecfg is not None:
        from ticlip.eval.runner import evaluate_run
        from ticlip.locking import DirLock

        from ticlip.progress import EvalProgress

        for i, r in enumerate(done_runs, 1):
            log(f"[{i}/{len(done_runs)}] evaluating {r.name}")
            progress, t_eval = EvalProgress(enabled=_show_progress(runs), desc=f"evaluating {r.name}"), time.time()
            with DirLock(r.run_dir, what="run", create=False):  # as `ticlip eval RUN`: one writer per run
                outcome = evaluate_run(r.run_dir, ecfg, log=lambda s: None, progress=progress)
            if outcome.evaluated:
                log(f"  {r.name}: {outcome.evaluated} results in {time.time() - t_eval:.1f} s ({progress.summary()})")
    report_path = None
    table = ""
    run_dirs = [r.run_dir for r in done_runs]
    if report and exp.report and run_dirs:
        from ticlip.report import write_report

        log(f"writing the report over {len(run_dirs)} runs ...")
        from ticlip.report.tables import DEFAULT_REFERENCE

        out = write_report(run_dirs, exp.out_dir, title=f"ticlip experiment {exp.name}",
                           reference=exp.reference or DEFAULT_REFERENCE, require_reference=exp.reference is not None)
        report_path = out.html
        with open(out.markdown, encoding="utf-8") as f:
            table = f.read()
    return ExperimentResult(exp.out_dir, [r.name for r in runs], [r.name for r, _ in todo if r.name not in failed],
                            skipped, failed, report_path, table, time.time() - t0)
