"""Two gloo processes under torchrun train the toy stream: identical parameters on both ranks, different
data on each rank, only rank 0 writes files, and the budget counts the global batch."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent('''
    import hashlib, json, os, sys
    import torch
    from ticlip.config import TrainConfig
    from ticlip.methods.base import StepOutcome
    from ticlip.methods.sequential import Sequential
    from ticlip.train.run import train_run

    def digest(state):
        h = hashlib.sha256()
        for k in sorted(state):
            h.update(k.encode()); h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    class Spy(Sequential):
        """Sequential, recording what each rank trained on and ended with."""
        def __init__(self, out):
            super().__init__()
            self.out, self.seen = out, []
        def extra_loss(self, model, images, texts, outputs):
            self.seen.append(hashlib.sha256(images.numpy().tobytes()).hexdigest())
            return None
        def end_step(self, ctx):
            rank = os.environ["RANK"]
            with open(os.path.join(self.out, f"rank{rank}-step{ctx.step}.json"), "w") as f:
                json.dump({"params": digest(ctx.model.state_dict()), "batches": self.seen}, f)
            self.seen = []
            return StepOutcome()

    stream, logs, out = sys.argv[1:4]
    cfg = TrainConfig(stream=stream, logs=logs, name="ddp", method="sequential", iterations_per_step=3,
                      batch_size=8, workers=0, warmup=1, steps="0:1", progress=False, threads=1)
    train_run(cfg, method=Spy(out))
''')


def digest(state):
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_parameters(toy_stream, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    logs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), toy_stream.root, str(logs), str(out)],
        env=env, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for t in (0, 1):
        r0 = json.loads((out / f"rank0-step{t}.json").read_text())
        r1 = json.loads((out / f"rank1-step{t}.json").read_text())
        assert r0["params"] == r1["params"]  # DDP kept the replicas in sync
        assert len(r0["batches"]) == len(r1["batches"]) == 3
        assert not set(r0["batches"]) & set(r1["batches"])  # each rank drew its own data
        saved = torch.load(logs / "ddp" / "steps" / str(t) / "checkpoint.pt", weights_only=False)["state_dict"]
        assert digest(saved) == r0["params"]  # rank 0 saved what both ranks hold
    info = json.loads((logs / "ddp" / "run.json").read_text())
    assert info["extra"]["world_size"] == 2 and info["extra"]["global_batch_size"] == 16
    assert [s["pairs_seen"] for s in info["steps"]] == [48, 48]  # 3 iterations x 8 pairs x 2 ranks
    # only rank 0 writes: no temp files or per-rank leftovers in the run directory
    names = {os.path.relpath(os.path.join(d, f), logs / "ddp") for d, _, fs in os.walk(logs / "ddp") for f in fs}
    assert names == {"config.yaml", "run.json", "stream.json"} | {
        f"steps/{t}/{f}" for t in (0, 1) for f in ("checkpoint.pt", "step.json", "buffer.json", "train_log.jsonl")}
