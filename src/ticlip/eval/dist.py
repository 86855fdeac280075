"""Evaluation under ``torchrun``: the ranks split the pending work and rank 0 writes the results.

``torchrun --nproc_per_node N -m ticlip.cli eval RUN`` (or ``srun torchrun --nnodes ...`` across
machines) sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Then:

- every rank plans the same pending results (``ticlip.eval.plan``) and takes the work units
  (model step, task) at positions ``rank, rank + N, rank + 2N, ...`` of that plan (round-robin over the
  models in step order and, per model, the tasks in the plan's order; a unit holds all pending eval
  steps of its task, so a classifier is built once per model and unit);
- each rank appends its results to its own part file ``eval.jsonl.rank<r>.part``
  (``ticlip.eval.results.part_path``), flushed line by line, so an interrupted evaluation keeps them;
- rank 0 holds the directory's lock, merges the part files into ``eval.jsonl`` in the order one
  process would have written them (``merge_parts``, one atomic rewrite) and writes the tables.

The process group only exchanges small Python objects (counts, a lock flag), so it is always gloo,
also when the models run on GPUs (each rank then uses ``cuda:<LOCAL_RANK>``). Without those
variables everything here is a single process (rank 0 of 1) and nothing is initialised.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from ticlip.errors import TiclipError


class EvalRefused(TiclipError):
    """Rank 0 could not take the output directory's lock, so no rank evaluates."""


@dataclass
class EvalDist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False  # whether this module created the process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def all_gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def shutdown(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.initialized = False

    def device(self, device: str) -> str:
        """The device this rank evaluates on: plain ``cuda`` becomes ``cuda:<LOCAL_RANK>``."""
        return f"cuda:{self.local_rank}" if self.distributed and device == "cuda" else device


SINGLE = EvalDist()


def init_eval_dist() -> EvalDist:
    """Join the process group torchrun describes in the environment (gloo), or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return EvalDist()
    import torch.distributed as dist

    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", rank=rank, world_size=world_size)
        created = True
    return EvalDist(dist.get_rank(), dist.get_world_size(), local_rank, created)


@contextlib.contextmanager
def main_rank_lock(ed: EvalDist, directory: str, *, what: str, create: bool = True):
    """Rank 0 holds ``directory``'s ``DirLock`` while the block runs; if it cannot take it, every rank
    raises (rank 0 its own one-line error, the others ``EvalRefused``)."""
    from ticlip.locking import DirLock

    lock, refused = None, None
    if ed.is_main:
        try:
            lock = DirLock(directory, what=what, create=create).acquire()
        except TiclipError as e:
            refused = e
    try:
        if not all(ed.all_gather(refused is None)):
            raise refused or EvalRefused(f"rank 0 could not take the lock of {directory}; see its error")
        yield
    finally:
        if lock is not None:
            lock.release()


def share(plans: list[tuple], rank: int, world_size: int) -> list[tuple]:
    """``plans`` ((model, todo, present) per model, as the evaluator plans them) keeping in each ``todo``
    only this rank's work units: a unit is (model, task) with all its pending eval steps, units are
    numbered over the models in order and the tasks in first-pending order, and unit ``k`` goes to rank
    ``k mod world_size``."""
    k, out = 0, []
    for model, todo, present in plans:
        owner: dict[str, int] = {}
        for spec, _ in todo:
            if spec.name not in owner:
                owner[spec.name] = k % world_size
                k += 1
        out.append((model, [(spec, j) for spec, j in todo if owner[spec.name] == rank], present))
    return out


__all__ = ["SINGLE", "EvalDist", "EvalRefused", "init_eval_dist", "main_rank_lock", "share"]
