"""Reusing identical step trainings: a content-addressed cache of a step's training result.

Within an experiment many runs train the same thing: step 0 of every method starts from the same
random weights (the seed), draws the same step-0 data with the same schedule, budget and seed, and
ends with the same weights. ``StepCache`` stores the result of a step's ``train()`` phase once and
lets every later run with the same inputs load it instead of training again.

What is cached (``<cache>/train/<key>.pt``, one file, loadable with ``torch.load(weights_only=True)``):
the model's tensors after ``train()`` and before the method's ``end_step`` (so EWC's Fisher pass,
patching's interpolation and every other end hook still run per method), the ``LoopState`` (pairs
seen, MACs, losses), the step's ``train_log.jsonl`` lines, and the global RNG states after training
(torch, python ``random`` and numpy, as tensors, lists and numbers), so the run that reuses the
result continues exactly as if it had trained the step itself. (Both data paths re-seed the RNGs
they use per chunk, and the next step's model creation re-seeds torch, so today nothing downstream
reads these states; restoring them keeps that true for whatever reads them later.) ``<key>.json`` next to it lists the
facts the key was made from, for people looking into the cache.

The key is a digest of everything the training result depends on (``step_facts``):

- the code: ticlip's version, torch's and open_clip's versions, and a digest of the source files
  of ``ticlip/train``, ``ticlip/methods``, the top level of ``ticlip/data`` (the data pipeline),
  ``ticlip/models.py``, ``ticlip/config.py`` and the bundled model configs: any edit there is a miss;
- the model name and its open_clip config;
- the starting weights: a digest of the model's tensors when training starts (a random init from the
  seed, an ``--init`` checkpoint, the previous step's checkpoint or a patched one all end up there;
  tensors, not file bytes: a checkpoint file also carries its run's name);
- the torch RNG state when training starts (the data path re-seeds every RNG per chunk, so this
  only guards against an unseen consumer of the global RNG), the thread count and the device;
- the step index, the plan (init, typed sources with weights and pair counts, the subset seed), the
  stream's fingerprint (a digest of its manifest, and of a pool stream's manifest);
- the iterations, the resolved schedule of the step, MACs per pair, the extra forward passes per pair
  the loop charges and the step's allotted MACs (the log's "budget used");
- every ``TrainConfig`` setting except those that cannot change the training result
  (``IGNORED_SETTINGS``: names, paths, the budget's spelling, the method's name, progress output...),
  so a setting added later is part of the key until someone decides it is not;
- the method's ``training_key(t)``: how the method changes training at step t (None: plain CLIP
  training; LwF's distillation, EWC's penalty and any ``extra_loss`` describe themselves).

Not cached (the step trains as before; ``step.json`` says why): branched schedules, const-cosine, wsd
and rsqrt (the anneal branch and the trunk are two trainings from one branch point), DDP (ranks would wait on
each other's lock), a plan with a pool of raw shard URLs (their content is not fingerprinted), and a
step resumed from a saved state.

Concurrency: runs train in parallel processes. The first run to miss a key takes the key's lock
(``<cache>/train/<key>.lock/``, a ``ticlip.locking.DirLock``: an exclusive lock file; a holder that
died is recognised and its lock taken over) and trains; a run reaching the same key meanwhile polls
the lock (up to ``LOCK_WAIT_S``, then trains on its own) and then loads the stored result. Entries
are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from typing import Any, Callable, Iterator

from ticlip.atomic import torch_save_atomic, write_text_atomic
from ticlip.eval.shared import PACKAGE_DIR, json_digest, source_digest, tensor_digest, versions
from ticlip.train.batches import rng_state

CACHE_FORMAT = 1
LOCK_WAIT_S = 6 * 3600.0  # how long a run waits for another process training the same step
LOCK_NOTE_EVERY_S = 60.0
LOCK_POLL_S = 0.5

# TrainConfig settings that cannot change a step's training result (their effect, where there is one,
# enters the key in resolved form: the budget as iterations, the stream as its fingerprint, --init as
# the starting tensors, the method as its training_key).
IGNORED_SETTINGS = frozenset({
    "stream", "method", "method_params", "init", "steps", "total_macs", "iterations_per_step", "budget_scale",
    "name", "label", "logs", "report_to", "progress", "save_every_s", "step_cache", "device",
})


# --------------------------------------------------------------------------- digests
def digest(obj: Any) -> str:
    """A stable hex digest of a JSON-ready object (``ticlip.eval.shared.json_digest``)."""
    return json_digest(obj)


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """ticlip's, torch's and open_clip's versions and a digest of the sources that shape training."""
    return {**versions(), "sources": source_digest(PACKAGE_DIR, ["train", "methods", "data/", "models.py", "config.py",
                                                                 "model_configs"])}


def with_tensor_digests(obj: Any) -> Any:
    """``obj`` with every tensor, and every dict made only of tensors, replaced by its digest."""
    import torch

    if isinstance(obj, torch.Tensor):
        return {"tensor": tensor_digest({"": obj})}
    if isinstance(obj, dict):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {"tensors": tensor_digest(obj)}
        return {str(k): with_tensor_digests(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [with_tensor_digests(v) for v in obj]
    return obj


def stream_fingerprint(stream) -> str:
    """A digest of a stream's manifest (its steps, shards, counts and provenance; not where it lies)."""
    return digest(stream.to_dict())


# --------------------------------------------------------------------------- what a step depends on
def step_facts(trainer) -> tuple[dict | None, str]:
    """The facts that determine the training result of ``trainer`` (a ``StepTrainer`` after ``set_up``
    and ``resume``), or (None, why the step is not cached)."""
    import torch

    from ticlip.methods.base import PoolSource
    from ticlip.models import model_config

    run, t = trainer.run_ctx, trainer.t
    cfg = run.cfg
    if run.dist.world_size > 1:
        return None, "not cached under DDP"
    if trainer.sched.has_branch:
        return None, f"not cached: {trainer.sched.kind} trains a branch and a trunk from one branch point"
    pools = []
    for source in trainer.plan.sources:
        if isinstance(source, PoolSource):
            if source.shards:
                return None, "not cached: the plan draws from raw shards, whose content is not fingerprinted"
            from ticlip.data.stream import TimeStream

            pools.append(stream_fingerprint(TimeStream.load(source.stream)))
    try:
        method_key = with_tensor_digests(run.method.training_key(t))
    except Exception as e:  # a method that cannot describe its training is trained, never shared
        return None, f"not cached: {type(run.method).__name__}.training_key failed ({e})"
    settings = {k: v for k, v in cfg.model_dump().items() if k not in IGNORED_SETTINGS}
    facts = {
        "format": CACHE_FORMAT,
        "code": code_version(),
        "model": {"name": cfg.model, "config": model_config(cfg.model)},
        "start_weights": tensor_digest(trainer.model.state_dict()),
        "torch_rng": tensor_digest({"state": torch.get_rng_state()}),
        "threads": torch.get_num_threads(),
        "device": str(run.dist.device),
        "world_size": run.dist.world_size,
        "step": t,
        "plan": trainer.plan.to_dict(),
        "stream": stream_fingerprint(run.stream),
        "pools": pools,
        "iterations": trainer.iterations,
        "schedule": trainer.sched.to_dict(),
        "macs_per_pair": run.macs_per_pair,
        "extra_forward_passes_per_pair": trainer.budget.cost.extra_forward_passes_per_pair,
        "allotted_macs": trainer.budget.allotted_macs,  # the log's "budget used"
        "chunk": trainer.chunk,
        "settings": settings,
        "method_training": method_key,
    }
    return facts, ""


# --------------------------------------------------------------------------- the cache
class StepCache:
    """Step training results under ``<root>/train/``, keyed by ``digest(step_facts(...))``."""

    def __init__(self, root: str, *, wait_s: float = LOCK_WAIT_S, say: Callable[[str], None] = lambda s: None):
        self.root = root
        self.dir = os.path.join(root, "train")
        self.wait_s, self.say = wait_s, say

    def path(self, key: str) -> str:
        return os.path.join(self.dir, f"{key}.pt")

    def load(self, key: str) -> dict | None:
        """The entry stored under ``key``, or None (missing, or unreadable: then it is retrained)."""
        import torch

        path = self.path(key)
        if not os.path.exists(path):
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged entry is a miss, and is overwritten by the next store
            self.say(f"step cache: ignoring unreadable entry {path} ({type(e).__name__}: {e})")
            return None
        return entry if isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT else None

    def store(self, key: str, facts: dict, entry: dict) -> str:
        os.makedirs(self.dir, exist_ok=True)
        write_text_atomic(os.path.join(self.dir, f"{key}.json"),
                          json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n")
        torch_save_atomic({"format": CACHE_FORMAT, **entry}, self.path(key))
        return self.path(key)

    @contextlib.contextmanager
    def claim(self, key: str) -> Iterator[dict | None]:
        """Yields the stored entry of ``key`` (a hit) or None (a miss: the caller trains and stores,
        holding the key's lock so that a concurrent run with the same key waits and then reuses)."""
        from ticlip.locking import DirLock, LockHeld, read_lock

        entry = self.load(key)
        if entry is not None:
            yield entry
            return
        os.makedirs(self.dir, exist_ok=True)
        where = os.path.join(self.dir, f"{key}.lock")
        lock = DirLock(where, what="step cache entry")
        start = time.monotonic()
        last_note = start
        while True:
            try:
                lock.acquire()
                break
            except LockHeld:
                now = time.monotonic()
                if now - start >= self.wait_s:
                    self.say(f"step cache: waited {now - start:.0f} s for {_holder(read_lock(where))} to train "
                             f"this step; training it here")
                    yield None
                    return
                if now - last_note >= LOCK_NOTE_EVERY_S:
                    self.say(f"step cache: waiting for {_holder(read_lock(where))}, training the same step "
                             f"({now - start:.0f} s so far)")
                    last_note = now
                time.sleep(min(LOCK_POLL_S, max(0.0, self.wait_s - (now - start))))
        try:
            yield self.load(key)  # None, unless another run stored it while this one waited
        finally:
            lock.release()


def _holder(record: dict | None) -> str:
    if not record:
        return "another run"
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')} ({record.get('command', '')[:80]})"


# --------------------------------------------------------------------------- one step's reuse
class StepReuse:
    """The reuse decision of one step: its key (or why it has none) and, after the step, what
    ``step.json`` records (``record``)."""

    def __init__(self, trainer, cache: StepCache | None, facts: dict | None, why: str):
        self.trainer, self.cache, self.facts = trainer, cache, facts
        self.key = digest(facts) if facts is not None else None
        self.why = why
        self.reused_from: str | None = None
        self.source: dict | None = None

    @classmethod
    def for_step(cls, trainer) -> "StepReuse | None":
        """None when the run has no step cache; otherwise the step's decision (a key, or why not)."""
        cfg = trainer.run_ctx.cfg
        root = getattr(cfg, "step_cache", None)
        if not root:
            return None
        os.makedirs(root, exist_ok=True)  # also where evaluation shares results (ticlip.eval.shared)
        if trainer.resumed_phase is not None or trainer.phase != "main":
            return cls(trainer, None, None, "not cached: resumed from a saved state")
        facts, why = step_facts(trainer)
        return cls(trainer, StepCache(root, say=trainer.run_ctx.say), facts, why)

    def train_or_reuse(self, train: Callable[[], None], apply: Callable[[dict], None]) -> None:
        """``train()`` and store the result, or ``apply(entry)`` a stored one."""
        if self.cache is None or self.key is None:
            train()
            return
        tr = self.trainer
        run = tr.run_ctx
        with self.cache.claim(self.key) as entry:
            if entry is not None:
                apply(entry)
                self.source = dict(entry.get("source") or {})
                self.reused_from = f"{self.source.get('run', '?')} step {self.source.get('step', '?')}"
                run.say(f"step {tr.label}: training reused from {self.reused_from} (step cache {self.key[:12]})")
                return
            train()
            self.cache.store(self.key, self.facts, self._entry())

    def _entry(self) -> dict:
        tr = self.trainer
        run = tr.run_ctx
        lines: list[str] = []
        if os.path.exists(tr.log_path):
            with open(tr.log_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        return {
            "model": {k: v.detach().to("cpu", copy=True) for k, v in tr.model.state_dict().items()},
            "loop": tr.loop_state.to_dict(),
            "log": lines,
            "rng": rng_state(),
            "data_path": getattr(tr, "data_path", None) or "",
            "source": {"run": run.info.name, "run_dir": os.path.abspath(run.run_dir), "step": tr.t,
                       "label": tr.label},
        }

    def record(self) -> dict:
        """What step.json records under ``step_cache``."""
        out: dict = {"key": self.key, "reused": self.reused_from is not None}
        if self.reused_from is not None:
            out["reused_from"] = self.reused_from
            out["source"] = self.source
        if self.key is None:
            out["why_not"] = self.why
        return out


# --------------------------------------------------------------------------- what it saved
def work_saved(run_dirs) -> dict:
    """The share of training work the step cache saved over ``run_dirs``: ``macs``, all the MACs the
    runs account for (run.json: training plus the methods' extras); ``reused_macs``, the training MACs
    (step.json's ``train_macs``) of the steps whose training was reused (run.json's ``extra.reused``:
    their end hooks still ran); ``share`` = reused_macs / macs; step counts alongside."""
    from ticlip.run_layout import RunInfo, step_dir

    run_dirs = list(run_dirs)
    total = saved = 0.0
    steps = reused = 0
    for run_dir in run_dirs:
        info = RunInfo.load(run_dir)
        marked = set((info.extra.get("reused") or {}).keys())
        for rec in info.steps:
            if not rec.finished:
                continue
            steps += 1
            total += rec.macs
            if str(rec.index) in marked:
                reused += 1
                with open(os.path.join(step_dir(run_dir, rec.index), "step.json"), encoding="utf-8") as f:
                    saved += float(json.load(f).get("train_macs") or 0.0)
    return {"runs": len(run_dirs), "steps": steps, "reused_steps": reused, "macs": total,
            "reused_macs": saved, "share": saved / total if total else 0.0}


__all__ = ["CACHE_FORMAT", "IGNORED_SETTINGS", "LOCK_WAIT_S", "StepCache", "StepReuse",
           "code_version", "digest", "step_facts", "stream_fingerprint", "tensor_digest", "work_saved"]
