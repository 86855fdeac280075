"""One step of a run as an object with named phases: set up, resume, train, finish, rewind.

    trainer = StepTrainer(run, t)
    trainer.run()     # = set_up(); resume(); train(); finish(); rewind(); mark_finished()
                      #   (with a step cache, train() may be a reuse of an identical training:
                      #   train_or_reuse, record_reuse; ticlip.train.reuse)

- ``set_up``: the method's plan and the step's budget; the model from the plan's init; the method's
  context and ``begin_step``; the update (``TrainConfig.update``, ``ticlip.train.updates``: frozen
  parameters or a fresh LoRA adapter); DDP wrapper, optimizer (trainable parameters), scaler and the
  data mixture.
- ``resume``: reload ``steps/<t>/state.pt`` when an earlier attempt saved one (phase, loop
  position, model, optimizer, scaler, RNGs, method state) and cut the log back to that position.
- ``train``: the main phase (to the const-cosine branch point, or to the end), then the decay
  branch when the schedule has one.
- ``finish``: a LoRA adapter merged into the plain weights; the method's ``end_step`` (saved before it when the method says it is expensive),
  then the deployable ``checkpoint.pt``, ``method.pt`` and ``step.json``; before ``end_step``,
  ``trained.pt`` when the next step starts from the weights this step trained (plan init "trained")
  and ``end_step`` changes the deployed ones (the merge family's train_from=trained, deploy=merge).
- ``rewind``: const-cosine only, when the next step continues from this one's weights
  (``Budget.next_step_continues``: not after the stream's last step, not for Oracle and Restart, whose
  next step starts from the initial weights, and not for a method whose ``end_step`` changes the
  deployed weights, e.g. patching, whose next step starts from the deployed checkpoint): back to the
  constant-LR trunk saved at the branch point, keeping what ``end_step`` learnt, and train it to
  ``continue.pt``.

The step's LR schedule warms up by where its weights start (``ScheduleConfig.for_step``): the run's
initial weights get ``warmup``, warm-started steps ``warmup_later``.

The phase reached is ``self.phase`` (main, branch, end, trunk, done), saved with the resumable state.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from ticlip.atomic import torch_save_atomic, write_text_atomic
from ticlip.errors import TiclipError
from ticlip.run_layout import RunInfo, StepRecord, step_dir
from ticlip.train.batches import rng_state, set_rng_state

PHASES = ("main", "branch", "trunk", "end")  # trunk/branch: const-cosine only; end: end_step pending


class RunRefused(TiclipError):
    """A run directory exists (or does not) in a way that conflicts with what was asked."""


@dataclass
class RunContext:
    """What every step of a run shares (built by ``ticlip.train.run.train_run``)."""

    cfg: Any  # TrainConfig
    stream: Any  # TimeStream
    method: Any  # Method
    dist: Any  # DistInfo
    run_dir: str
    info: RunInfo
    budget: Any  # Budget
    sched_cfg: Any  # ScheduleConfig
    macs_per_pair: float
    loss_fn: Any
    indices: list[int]
    tb: Any = None

    def say(self, text: str) -> None:
        if self.dist.is_main:
            print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers
def model_transform(bundle, train: bool):
    """ticlip's transforms (RGBA emoji composited on a background) when present, else open_clip's."""
    try:
        from ticlip.data.transforms import make_eval_transform, make_train_transform, model_mean_std
    except ImportError:
        return bundle.preprocess_train if train else bundle.preprocess_val
    mean, std = model_mean_std(bundle.model)
    make = make_train_transform if train else make_eval_transform
    return make(bundle.image_size, mean=mean, std=std)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _jsonable(obj):
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return obj.tolist() if obj.numel() < 100 else f"tensor{tuple(obj.shape)}"
    except ImportError:
        pass
    return str(obj)


# --------------------------------------------------------------------------- the step
class StepTrainer:
    """Step ``t`` of the run ``run`` (see the module docstring for the phases)."""

    def __init__(self, run: RunContext, t: int):
        self.run_ctx, self.t = run, t
        self.label = run.stream.steps[t].label
        self.dir = step_dir(run.run_dir, t)
        self.state_path = os.path.join(self.dir, "state.pt")
        self.trunk_path = os.path.join(self.dir, "trunk.pt")
        self.log_path = os.path.join(self.dir, "train_log.jsonl")
        self.phase = "main"
        self.resumed_phase: str | None = None  # the phase a saved state put the step in
        self.resumed_data_path: str | None = None  # and the data path it was saved on (see _memory)
        self.extra_macs = 0.0
        self.log = None

    # ------------------------------------------------------------------ the whole step
    def run(self) -> None:
        self.set_up()
        self.resume()
        try:
            self.train_or_reuse()
            self.finish()
            self.record_reuse()
            self.rewind()
            self.mark_finished()
        finally:
            if self.log is not None:
                self.log.close()

    # ------------------------------------------------------------------ reuse (ticlip.train.reuse)
    def train_or_reuse(self) -> None:
        """``train()``, or, with a step cache (``TrainConfig.step_cache``) holding this step's training
        result (same starting weights, plan, settings, method training, code), load that result:
        weights, loop state, log and RNG states; the phase is then "end" and ``finish`` runs as usual."""
        from ticlip.train.reuse import StepReuse

        self.reuse = StepReuse.for_step(self)
        if self.reuse is None:
            self.train()
            return
        self.reuse.train_or_reuse(self.train, self._apply_reused)

    def _apply_reused(self, entry: dict) -> None:
        from ticlip.train.loop import LoopState

        run = self.run_ctx
        self.model.load_state_dict(entry["model"])
        self.loop_state = LoopState.from_dict(entry["loop"])
        lines = list(entry.get("log") or [])
        if run.dist.is_main:
            if self.log is not None:
                self.log.close()
            write_text_atomic(self.log_path, "".join(line + "\n" for line in lines))
        if run.tb is not None:
            for line in lines:
                record = {k: v for k, v in json.loads(line).items() if k not in ("step", "label")}
                run.tb.offset, run.tb.step_index = self.tb_offset, self.t
                run.tb(record)
        set_rng_state(entry["rng"])
        if entry.get("data_path"):  # where the reused training read its batches
            self.data_path = entry["data_path"]
        self.phase = "end"

    def record_reuse(self) -> None:
        """step.json's ``step_cache`` (the key; ``reused_from`` on a hit, or why the step has no key) and
        run.json's ``extra.reused`` (step index -> where its training came from), for reports of the
        work saved. The reused step's MACs still count: the method spent them, this machine did not."""
        reuse = getattr(self, "reuse", None)
        path = os.path.join(self.dir, "step.json")
        if reuse is None or not self.run_ctx.dist.is_main or not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        summary["step_cache"] = reuse.record()
        if reuse.reused_from is not None:
            summary["reused_from"] = reuse.reused_from
            self.run_ctx.info.extra.setdefault("reused", {})[str(self.t)] = reuse.reused_from
        else:
            self.run_ctx.info.extra.get("reused", {}).pop(str(self.t), None)
        write_text_atomic(path, json.dumps(summary, indent=2, default=_jsonable) + "\n")

    # ------------------------------------------------------------------ set up
    def set_up(self) -> None:
        from ticlip.methods.base import MethodContext, StepBudgetFacts
        from ticlip.models import create_model, quiet_open_clip, read_checkpoint
        from ticlip.train.buffers import with_run_seed
        from ticlip.train.loop import LoopState, make_scaler, use_fast_layout
        from ticlip.train.schedule import step_position

        run, t = self.run_ctx, self.t
        cfg, stream, method, dinfo = run.cfg, run.stream, run.method, run.dist
        if dinfo.is_main:
            os.makedirs(self.dir, exist_ok=True)
        self.plan = with_run_seed(method.plan(t, stream.step_sizes), cfg.seed)
        self.budget = run.budget.plan_step(method, t, schedule=run.sched_cfg, stream=stream)
        self.iterations = self.budget.iterations
        # const-cosine trains (and charges) the constant-LR trunk only when step t + 1 starts from it
        self.continues = run.budget.next_step_continues(method, t, stream)
        self.saved = read_checkpoint(self.state_path, map_location=dinfo.device, what="resume state") \
            if os.path.exists(self.state_path) else None
        init_path, self.init_desc, self.start = self._init_path()
        self.sched = run.sched_cfg.for_step(self.iterations, self.start, step_position(
            method, run.budget, t, stream.step_sizes))  # meta schedules: the step's place
        with quiet_open_clip():
            self.bundle = create_model(cfg.model, init=init_path, device=dinfo.device, seed=cfg.seed)
        self.model = self.bundle.model
        use_fast_layout(self.model, dinfo.device)
        self.ctx = MethodContext(
            step=t, stream=stream, model=self.model, label=self.label, device=dinfo.device,
            tokenizer=self.bundle.tokenizer, eval_transform=model_transform(self.bundle, train=False),
            seed=cfg.seed, initial_weights=cfg.init,
            budget=StepBudgetFacts(iterations=self.iterations, batch_size=cfg.batch_size,
                                   world_size=dinfo.world_size, rank=dinfo.rank, macs_per_pair=run.macs_per_pair),
            score_retrieval=self._scorer(),
        )
        method.begin_step(self.ctx)
        self._apply_update()  # after begin_step: the method saw (and copied) the plain model
        self.scaler = make_scaler(cfg.precision, dinfo.device)
        self.loop_state = LoopState()
        self.t_start = time.time()

    def _apply_update(self) -> None:
        """Which parameters train (``TrainConfig.update``, ``ticlip.train.updates``): freeze, or inject a
        fresh LoRA adapter (seeded by the run's seed and the step); then the DDP wrapper and an optimizer
        over the trainable parameters only."""
        from ticlip.train.batches import derive_seed
        from ticlip.train.dist import wrap_model
        from ticlip.train.loop import make_optimizer
        from ticlip.train.updates import UpdateSettings, apply_update

        cfg = self.run_ctx.cfg
        self.update = apply_update(self.model, UpdateSettings.of(cfg), seed=derive_seed(cfg.seed, self.t, "update"))
        self.ddp = wrap_model(self.model, self.run_ctx.dist)
        self.optimizer = make_optimizer(self.model, lr=cfg.lr, wd=cfg.wd, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                        kind=cfg.optimizer)

    def _merge_update(self) -> None:
        """LoRA: merge the adapter into the plain weights (an ordinary open_clip model again)."""
        from ticlip.train.updates import merge_update

        merge_update(self.model, getattr(self, "update", None))
        self.update = None

    def _scorer(self):
        """The evaluator's retrieval scorer, bound to this model's tokenizer and device."""
        from ticlip.eval.scorers import score_retrieval

        return functools.partial(score_retrieval, tokenizer=self.bundle.tokenizer, device=self.run_ctx.dist.device)

    def _init_path(self) -> tuple[str | None, str, str]:
        """The checkpoint the step starts from (None: random), a description for the log, and where the
        weights start for the schedule's warmup: "initial" (the run's initial weights, or random weights
        standing in for a missing previous checkpoint) or "previous"."""
        run, t = self.run_ctx, self.t
        first = t == run.indices[0]
        random = None, "random (seed {})".format(run.cfg.seed), "initial"
        if self.plan.init == "initial":
            if first and run.cfg.init:
                return run.cfg.init, f"--init {run.cfg.init}", "initial"
            return random
        prev = step_dir(run.run_dir, t - 1) if t > 0 else None
        if prev is not None and any(s.index == t - 1 and s.finished for s in run.info.steps):
            trunk = os.path.join(prev, "continue.pt")
            if os.path.exists(trunk):
                return trunk, f"step {t - 1}'s constant-LR trunk", "previous"
            trained = os.path.join(prev, "trained.pt")
            if self.plan.init == "trained" and os.path.exists(trained):
                return trained, f"step {t - 1}'s trained weights (before its end hook)", "previous"
            if self.plan.init == "trained" and run.method.end_step_changes_weights:
                raise RunRefused(f"step {t} starts from the weights step {t - 1} trained, but {trained} is "
                                 f"missing (step {t - 1} was trained by a ticlip that did not write it); start a new "
                                 "run (--name)")
            return os.path.join(prev, "checkpoint.pt"), f"step {t - 1}'s checkpoint", "previous"
        if run.cfg.init:  # e.g. a released checkpoint of step t - 1
            return run.cfg.init, f"--init {run.cfg.init}", "previous"
        if t > 0:
            run.say(f"warning: step {t} should start from step {t - 1}'s checkpoint, which this run does not have; "
                    f"starting from random weights (pass --init PATH to start from a checkpoint)")
        return random

    # ------------------------------------------------------------------ resume
    def resume(self) -> None:
        from ticlip.train.batches import Mixture, chunk_iterations
        from ticlip.train.buffers import write_buffer_json
        from ticlip.train.loop import JsonlLog, truncate_jsonl

        run, dinfo = self.run_ctx, self.run_ctx.dist
        if self.saved is not None:
            if self.saved.get("iterations") != self.iterations:
                raise RunRefused(f"saved state {self.state_path} was made for {self.saved.get('iterations')} "
                                 f"iterations, this step now plans {self.iterations}: the budget changed; start a "
                                 f"new run (--name)")
            self._restore(self.saved)
            self.phase = self.resumed_phase = self.saved["phase"]
            self.resumed_data_path = self.saved.get("data_path", "webdataset")
            run.say(f"step {self.label}: resuming {self.phase} phase at iteration "
                    f"{self.loop_state.iteration}/{self.iterations}")
            order, at = PHASES.index(self.phase), self.loop_state.iteration
            if dinfo.is_main:
                truncate_jsonl(self.log_path,
                               lambda r: (PHASES.index(r.get("phase", "main")), r["iteration"]) <= (order, at))
        elif dinfo.is_main and os.path.exists(self.log_path):
            os.remove(self.log_path)  # a previous attempt died before its first save
        self.saved = None
        self.log = JsonlLog(self.log_path, {"step": self.t, "label": self.label}) if dinfo.is_main else None
        cfg = run.cfg
        self.chunk = chunk_iterations(cfg.chunk_iterations, cfg.accum_freq, cfg.workers)
        self.mixture = Mixture.from_plan(run.stream, self.plan, model_transform(self.bundle, train=True),
                                         self.bundle.tokenizer, subset_seed=self.plan.subset_seed,
                                         shuffle=cfg.shuffle_buffer)
        if dinfo.is_main:  # the pairs of earlier steps this step may draw (ticlip.train.buffers)
            write_buffer_json(self.dir, run.stream, self.plan)
        self.last_save = time.time()
        self.tb_offset = sum(run.budget.plan_step(run.method, j).iterations
                             for j in run.indices if j < self.t) if run.tb else 0

    def _snapshot(self, phase: str) -> dict:
        return {"phase": phase, "loop": self.loop_state.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                "method": self.run_ctx.method.state_dict(), "rng": rng_state(), "step": self.t,
                "iterations": self.iterations, "data_path": getattr(self, "data_path", None)}

    def _restore(self, snap: dict) -> None:
        from ticlip.train.loop import LoopState

        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        if self.scaler is not None and snap.get("scaler"):
            self.scaler.load_state_dict(snap["scaler"])
        self.run_ctx.method.load_state_dict(snap["method"])
        self.loop_state = LoopState.from_dict(snap["loop"])
        set_rng_state(snap["rng"])

    def save_state(self, phase: str, path: str | None = None) -> None:
        """The resumable state at ``phase`` (rank 0 writes; atomically)."""
        if self.run_ctx.dist.is_main:
            torch_save_atomic(self._snapshot(phase), path or self.state_path)

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        """The main phase, then const-cosine's decay branch; leaves the phase at "end" when done."""
        sched, bp = self.sched, self.sched.branch_point
        if self.phase == "main":
            self._run_phase("main", 0, bp, sched.lr, "main")
            if sched.has_branch:
                if self.continues:
                    self.save_state("trunk", self.trunk_path)  # the constant-LR trunk at the branch point
                self.phase = "branch"
                self.save_state("branch")
            else:
                self.phase = "end"
        if self.phase == "branch":
            self._run_phase("branch", bp, self.iterations, sched.lr, "tail")
            self.phase = "end"

    def _run_phase(self, name: str, phase_start: int, end: int, lr_fn, data_tag: str) -> None:
        from ticlip.train.batches import ChunkedBatches, derive_seed, make_loader
        from ticlip.train.loop import LoopOptions, train_loop

        run, cfg, dinfo, K = self.run_ctx, self.run_ctx.cfg, self.run_ctx.dist, self.chunk
        if self.loop_state.iteration >= end:
            return
        start_chunk = (self.loop_state.iteration - phase_start) // K
        if self._memory() is not None:  # the step's pairs fit in memory (ticlip.train.memory)
            from ticlip.train.memory import MemoryBatches

            batches = MemoryBatches(self.memory, cfg.batch_size, K * cfg.accum_freq,
                                    derive_seed(cfg.seed, self.t, data_tag), start_chunk)
        else:
            batches = ChunkedBatches(self.mixture, cfg.batch_size, K * cfg.accum_freq,
                                     derive_seed(cfg.seed, self.t, data_tag), start_chunk)
        loader = make_loader(batches, cfg.workers, pin_memory=dinfo.device.startswith("cuda"))

        def after(st) -> None:
            at_boundary = (st.iteration - phase_start) % K == 0 and st.iteration < end
            if at_boundary and time.time() - self.last_save >= cfg.save_every_s:
                self.save_state(name)
                self.last_save = time.time()

        def write(record: dict) -> None:
            record = {"phase": name, **record}
            if self.log is not None:
                self.log(record)
            if run.tb is not None and name != "trunk":
                run.tb.offset, run.tb.step_index = self.tb_offset, self.t
                run.tb(record)

        opts = LoopOptions(
            iterations=end, accum_freq=cfg.accum_freq, precision=cfg.precision, grad_clip_norm=cfg.grad_clip_norm,
            device=dinfo.device, log_every=cfg.log_every, world_size=dinfo.world_size,
            macs_per_pair=run.macs_per_pair, extra_forward_passes=self.budget.cost.extra_forward_passes_per_pair,
            budget_macs=self.budget.allotted_macs, progress=cfg.progress and dinfo.is_main,
            desc=f"step {self.label} ({self.t + 1}/{len(run.stream.steps)})" + ("" if name == "main" else f" {name}"),
        )
        train_loop(self.ddp, loader, self.optimizer, lr_fn, loss_fn=run.loss_fn, opts=opts, state=self.loop_state,
                   method=run.method, scaler=self.scaler, log=write, after_iteration=after)

    def _memory(self):
        """The step's mixture decoded into memory, built on first use (``ticlip.train.memory``); None: the
        step reads the webdataset shards. A step resumed from a state saved on the webdataset path (or by
        a ticlip without the memory path) stays on it, so that the resumed run is exact."""
        if not hasattr(self, "memory"):
            from ticlip.data.transforms import model_mean_std
            from ticlip.train.memory import memory_mixture

            run = self.run_ctx
            self.memory, why = None, "the state it resumes was saved on the webdataset path"
            if self.resumed_data_path in (None, "memory"):
                mean, std = model_mean_std(self.model)
                self.memory, why = memory_mixture(self.mixture, image_size=self.bundle.image_size, mean=mean,
                                                  std=std, limit_mb=run.cfg.memory_limit_mb)
            self.data_path = "webdataset" if self.memory is None else "memory"
            if self.memory is not None:
                run.say(f"step {self.label}: training from memory ({len(self.memory)} pairs, "
                        f"{self.memory.nbytes / 2**20:.1f} MB decoded)")
            elif run.cfg.memory_limit_mb:
                run.say(f"step {self.label}: reading the webdataset shards ({why})")
        return self.memory

    # ------------------------------------------------------------------ finish
    def finish(self) -> None:
        """The method's end hook, then the deployable checkpoint, method state and step.json."""
        from ticlip.methods.base import StepOutcome

        if self.phase != "end":
            return
        method = self.run_ctx.method
        if method.expensive_end_step:
            self.save_state("end")  # a kill inside a long end hook does not redo the training
        self._merge_update()  # LoRA: end_step, trained.pt and checkpoint.pt see plain weights
        self._write_trained()
        outcome = method.end_step(self.ctx)
        if not isinstance(outcome, StepOutcome):
            raise TypeError(f"{type(method).__name__}.end_step must return a StepOutcome, got {type(outcome).__name__}")
        facts = dict(outcome.facts)
        data_path = getattr(self, "data_path", None) or self.resumed_data_path  # where training read its batches
        if data_path:
            facts["data_path"] = data_path
        if outcome.cost is not None:
            self.extra_macs = outcome.cost.end_macs(self.run_ctx.macs_per_pair)
            facts["extra_macs"] = self.extra_macs
        self._write_deployable(facts)
        self.phase = "trunk" if self.sched.has_branch and self.continues else "done"

    def _write_trained(self) -> None:
        """``trained.pt``: the weights this step trained, before ``end_step`` changes them, when the next
        step's plan starts from them (init "trained") and neither the deployable checkpoint (end_step
        changes it) nor const-cosine's trunk (``continue.pt``) will hold them. Rank 0, atomically, in
        open_clip's format; rewritten identically when a resumed step finishes again."""
        from ticlip.models import save_checkpoint

        run, t = self.run_ctx, self.t
        if not run.dist.is_main or t + 1 >= len(run.stream.steps) or not run.method.end_step_changes_weights:
            return
        if self.sched.has_branch and self.continues:
            return  # the next step starts from the trunk
        if run.method.plan(t + 1, run.stream.step_sizes).init != "trained":
            return
        save_checkpoint(self.model, os.path.join(self.dir, "trained.pt"), name=run.cfg.model,
                        extra={"step": t, "label": self.label, "branch": "trained"})

    def _write_deployable(self, facts: dict) -> None:
        """The deployable checkpoint, method state and step.json of the step (rank 0)."""
        from ticlip.models import save_checkpoint
        from ticlip.train.loop import skipped_in_log

        run, t, ls = self.run_ctx, self.t, self.loop_state
        if not run.dist.is_main:
            return
        save_checkpoint(self.model, os.path.join(self.dir, "checkpoint.pt"), name=run.cfg.model,
                        extra={"epoch": t + 1, "step": t, "label": self.label, "run": run.info.name})
        mstate = run.method.state_dict()
        if mstate:
            torch_save_atomic(mstate, os.path.join(self.dir, "method.pt"))
            if t > 0:  # keep the latest method state only (it may hold whole models)
                old = os.path.join(step_dir(run.run_dir, t - 1), "method.pt")
                if os.path.exists(old):
                    os.remove(old)
        summary = {
            "index": t, "label": self.label, "init": self.init_desc, "plan": self.plan.to_dict(),
            "schedule": self.sched.to_dict(),
            "budget": self.budget.to_dict(), "iterations": self.iterations, "pairs_seen": ls.pairs_seen,
            "train_macs": ls.macs, "extra_macs": self.extra_macs,
            "first_loss": ls.first_loss, "last_loss": ls.last_loss,
            "mean_loss": ls.loss_sum / ls.loss_count if ls.loss_count else None,
            "facts": facts,
            "skipped_samples": skipped_in_log(self.log_path),  # truncated shards, corrupt images: skipped, counted
        }
        if len(self.plan.sources) > 1:  # each source's ratio and the pairs drawn from it (ticlip.train.batches)
            summary["mixture"] = self._mixture_record()
        write_text_atomic(os.path.join(self.dir, "step.json"), json.dumps(summary, indent=2, default=_jsonable) + "\n")
        run.say(f"step {self.label} ({t + 1}/{len(run.stream.steps)}): {self.iterations} iterations, "
                f"{ls.pairs_seen} pairs, loss {_fmt(ls.first_loss)} -> {_fmt(ls.last_loss)}, "
                f"{ls.macs + self.extra_macs:.3g} MACs -> {os.path.join(self.dir, 'checkpoint.pt')}")

    def _mixture_record(self) -> dict:
        """The pairs each plan source gave the deployed weights' training (main phase, then const-cosine's
        branch; the trunk repeats the branch's batches), replayed from the data path's seeds, so a
        resumed or reused step counts each batch once."""
        from ticlip.train.batches import derive_seed, mixture_record
        from ticlip.train.memory import memory_drawn

        cfg, t, path = self.run_ctx.cfg, self.t, getattr(self, "data_path", None) or self.resumed_data_path
        phases = [("main", self.sched.branch_point)]
        if self.sched.has_branch:
            phases.append(("tail", self.iterations - self.sched.branch_point))
        drawn = [0] * len(self.mixture.origins)
        for tag, iterations in phases:
            seed, micro = derive_seed(cfg.seed, t, tag), iterations * cfg.accum_freq
            chunk = self.chunk * cfg.accum_freq
            if path == "memory":
                got = memory_drawn(self.mixture, seed, micro, chunk_batches=chunk,
                                   global_batch=cfg.batch_size * self.run_ctx.dist.world_size)
            else:
                got = self.mixture.drawn(seed, micro, chunk_batches=chunk, batch_size=cfg.batch_size,
                                         workers=cfg.workers, world_size=self.run_ctx.dist.world_size)
            drawn = [a + b for a, b in zip(drawn, got)]
        return mixture_record(self.plan, self.mixture, drawn, path or "webdataset")

    # ------------------------------------------------------------------ rewind (const-cosine)
    def rewind(self) -> None:
        """Back to the constant-LR trunk at the branch point and train it to ``continue.pt`` (only when
        the next step continues from it: ``self.continues``)."""
        from ticlip.models import read_checkpoint, save_checkpoint
        from ticlip.train.dist import barrier
        from ticlip.train.loop import LoopState

        run, dinfo = self.run_ctx, self.run_ctx.dist
        if self.phase != "trunk":
            return
        if self.resumed_phase != "trunk":  # straight from finish(): the branch's weights are loaded
            barrier(dinfo)
            spent = LoopState(**self.loop_state.to_dict())
            # what end_step learnt (EWC's Fisher) outlives the rewind
            after_end = copy.deepcopy(run.method.state_dict())
            if run.cfg.update == "lora":  # the trunk continues its own adapter: inject one to load it into
                self._apply_update()
            self._restore(read_checkpoint(self.trunk_path, map_location=dinfo.device, what="trunk state"))
            run.method.load_state_dict(after_end)
            # the trunk restarts at the branch point; the compute counters keep the branch's spend
            self.loop_state.pairs_seen, self.loop_state.macs = spent.pairs_seen, spent.macs
            self.save_state("trunk")
        else:  # resumed in the trunk phase, after the deployable checkpoint was written
            self.extra_macs = self._recorded_extra_macs()
        self._run_phase("trunk", self.sched.branch_point, self.iterations, self.sched.trunk_lr, "tail")
        self._merge_update()
        if dinfo.is_main:
            save_checkpoint(self.model, os.path.join(self.dir, "continue.pt"), name=run.cfg.model,
                            extra={"step": self.t, "label": self.label, "branch": "trunk"})
        self.phase = "done"

    def _recorded_extra_macs(self) -> float:
        path = os.path.join(self.dir, "step.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return float(json.load(f).get("extra_macs") or 0.0)
        return 0.0

    # ------------------------------------------------------------------ bookkeeping
    def mark_finished(self) -> None:
        """The step's record in run.json; the resumable state files go. Every rank keeps the record
        (the next step's start, and so its warmup, is decided from it on every rank); rank 0 writes."""
        run, t, ls = self.run_ctx, self.t, self.loop_state
        info = run.info
        macs = ls.macs + self.extra_macs
        before = sum(s.macs for s in info.steps if s.index < t and s.finished)
        info.steps = [s for s in info.steps if s.index != t]
        info.steps.append(StepRecord(index=t, label=self.label, checkpoint=os.path.join("steps", str(t), "checkpoint.pt"),
                                     pairs_seen=ls.pairs_seen, macs=macs, cumulative_macs=before + macs, finished=True))
        info.steps.sort(key=lambda s: s.index)
        info.extra.setdefault("seconds", {})[str(t)] = round(time.time() - self.t_start, 3)
        if not run.dist.is_main:
            return
        info.save(run.run_dir)
        for p in (self.state_path, self.trunk_path):
            if os.path.exists(p):
                os.remove(p)


__all__ = ["PHASES", "RunContext", "RunRefused", "StepTrainer", "model_transform"]
