"""Shared by the trainer tests (test_trainer*, test_resume*, test_checkpoint) and the bad-input tests."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on two busy cores, OpenMP spinning made two threads 10-25x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def held_out_loss(stream, step: int, init: str | None) -> float:
    """open_clip's contrastive loss of a tiny model (``init`` checkpoint or seed-0 random weights, the
    trainer's own init) on ``step``'s held-out retrieval pairs."""
    from open_clip.loss import ClipLoss

    from ticlip.data.transforms import make_eval_transform
    from ticlip.models import create_model

    ev = stream.eval_set(step)
    tf = make_eval_transform(32)
    b = create_model("ticlip-tiny-32", init=init, seed=0)
    with torch.no_grad():
        out = b.model.eval()(torch.stack([tf(i) for i in ev.images]), b.tokenizer(ev.captions))
        return float(ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"]))


class Crash(Exception):
    pass


def crashing(name: str, after: int):
    """A registered method that dies on its (after+1)-th batch, like a killed process would."""
    from ticlip.methods import get_method

    method = get_method(name)
    original, calls = method.extra_loss, [0]

    def extra_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] > after:
            raise Crash(f"crash after {after} batches")
        return original(*args, **kwargs)

    method.extra_loss = extra_loss
    return method


def one_error_line(capsys, command: str) -> str:
    """The single ``ticlip COMMAND: error:`` line on stderr (asserting there is exactly one, no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"ticlip {command}: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    return errors[0]
