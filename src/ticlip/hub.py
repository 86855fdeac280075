"""Checkpoints by hub name: what ``--init`` and ``eval --checkpoint`` accept besides a local file.

- ``hf-hub:ORG/REPO``: the open_clip weights of a Hugging Face repo, ``open_clip_model.safetensors``
  when the repo has it, else ``open_clip_pytorch_model.bin`` (open_clip's file names);
- ``hf-hub:ORG/REPO/FILE``: one file of a repo, e.g. a released TiC-CLIP checkpoint
  ``hf-hub:apple/TiC-CLIP-basic-cumulative/checkpoints/2016.pt`` (with ``--model ViT-B-16``);
- ``MODEL:TAG``: an open_clip pretrained tag, e.g. ``ViT-B-32:laion2b_s34b_b79k`` (the pairs
  ``open_clip.list_pretrained()`` lists); its weights come from the hub repo open_clip's table names.
  MODEL must be the run's ``--model``.

A name resolves to a file in the Hugging Face cache (``HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``), cache first: a cached file is used without asking the network; only a
file not cached is downloaded, and with ``HF_HUB_OFFLINE=1`` that is one line saying how to fetch it.
The file is then read like any checkpoint, by ``ticlip.models.read_checkpoint``: safetensors, or
``torch.load(weights_only=True)``; a hub file that needs arbitrary unpickling is refused like a local one.

Written around ``huggingface_hub.hf_hub_download`` (with ``local_files_only`` first) rather than
calling open_clip's ``download_pretrained``: that one always asks the network first and turns every
failure into one FileNotFoundError, so neither "cache first" nor a useful offline message is possible.
"""

from __future__ import annotations

import os
import re

from ticlip.errors import TiclipError

HF_PREFIX = "hf-hub:"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's names, in its order
_TAG = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*):([A-Za-z0-9][A-Za-z0-9._\-]*)$")
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")


class HubError(TiclipError):
    """A hub checkpoint name that is malformed, unknown, not cached while offline, or not downloadable."""


def is_hub_name(spec: str | None) -> bool:
    """Whether ``spec`` is a hub name (``hf-hub:...`` or ``MODEL:TAG``) rather than a local path. A
    local file of that name wins: an existing path is never a hub name."""
    if not spec or os.path.exists(spec):
        return False
    return spec.startswith(HF_PREFIX) or _TAG.match(spec) is not None


def parse_hf(spec: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/REPO[/FILE]`` as (``ORG/REPO``, ``FILE`` or None)."""
    parts = spec[len(HF_PREFIX):].strip("/").split("/")
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]) or any(not p for p in parts[2:]):
        raise HubError(f"{spec!r} is not a hub checkpoint name: write hf-hub:ORG/REPO or hf-hub:ORG/REPO/FILE "
                       "(e.g. hf-hub:apple/TiC-CLIP-basic-cumulative/checkpoints/2016.pt)")
    return f"{parts[0]}/{parts[1]}", "/".join(parts[2:]) or None


def pretrained_tag(spec: str) -> tuple[str, str, dict]:
    """``MODEL:TAG`` as (model, tag, open_clip's pretrained config); HubError for an unknown pair."""
    import open_clip

    m = _TAG.match(spec)
    if m is None:
        raise HubError(f"{spec!r} is not an open_clip pretrained tag: write MODEL:TAG, e.g. ViT-B-32:laion2b_s34b_b79k")
    model, tag = m.group(1), m.group(2)
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        known = f"its tags: {', '.join(tags)}" if tags else \
            "see `python -c 'import open_clip; print(open_clip.list_pretrained())'`"
        raise HubError(f"{spec!r} is no file, and open_clip has no pretrained weights {tag!r} for model {model!r}; "
                       f"{known}")
    return model, tag, cfg


def check_tag_model(spec: str, model_name: str, model_cfg: dict) -> None:
    """For a ``MODEL:TAG`` name: MODEL must be ``model_name``, and weights trained with QuickGELU need a
    model that uses it (open_clip's ``-quickgelu`` configs); the shapes alone cannot tell."""
    if not is_hub_name(spec) or spec.startswith(HF_PREFIX):
        return
    model, tag, cfg = pretrained_tag(spec)
    if model != model_name:
        raise HubError(f"{spec} holds weights of model {model!r}, not of --model {model_name!r}: pass --model {model}")
    if cfg.get("quick_gelu") and not model_cfg.get("quick_gelu"):
        raise HubError(f"{spec} was trained with QuickGELU, which model {model_name!r} does not use: use "
                       f"--model {model_name}-quickgelu and {model_name}-quickgelu:{tag}")


def hub_label(spec: str) -> str:
    """A short name for results of a hub checkpoint (the file's stem, the repo's or model-tag's name)."""
    if spec.startswith(HF_PREFIX):
        repo, file = parse_hf(spec)
        return os.path.splitext(os.path.basename(file))[0] if file else repo.split("/")[1]
    model, tag, _ = pretrained_tag(spec)
    return f"{model}-{tag}"


def resolve(spec: str) -> str:
    """The local file of a hub name (see the module doc), downloaded only when not cached."""
    if spec.startswith(HF_PREFIX):
        repo, file = parse_hf(spec)
    else:
        _, _, cfg = pretrained_tag(spec)
        parts = cfg["hf_hub"].split("/")  # open_clip writes "org/repo/" or "org/repo/file"
        repo, file = "/".join(parts[:2]), "/".join(parts[2:]) or None
    candidates = [file] if file else list(WEIGHT_FILES)
    cached = _cached(repo, candidates)
    if cached:
        return cached
    if _offline():
        what = file or " or ".join(WEIGHT_FILES)
        raise HubError(f"{spec}: {what} of {repo} is not in the Hugging Face cache ({_cache_shown()}) and "
                       f"HF_HUB_OFFLINE is set: fetch it where there is network with `hf download {repo} "
                       f"{file or WEIGHT_FILES[0]}` (into the same HF_HUB_CACHE), or unset HF_HUB_OFFLINE")
    return _download(spec, repo, candidates)


def _cache_dir() -> str | None:
    """HF_HUB_CACHE read now, not when huggingface_hub was imported (None: its default)."""
    return os.environ.get("HF_HUB_CACHE") or None


def _cache_shown() -> str:
    from huggingface_hub import constants

    return _cache_dir() or constants.HF_HUB_CACHE


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _cached(repo: str, files: list[str]) -> str | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    for file in files:
        try:
            return hf_hub_download(repo, file, cache_dir=_cache_dir(), local_files_only=True)
        except LocalEntryNotFoundError:
            continue
    return None


def _download(spec: str, repo: str, files: list[str]) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    for file in files:
        try:
            return hf_hub_download(repo, file, cache_dir=_cache_dir())
        except LocalEntryNotFoundError:  # the hub could not be reached (and the file is not cached)
            raise HubError(f"{spec}: {file} of {repo} is not cached and the Hugging Face hub cannot be reached; "
                           f"fetch it with `hf download {repo} {file}` where there is network") from None
        except RepositoryNotFoundError:
            raise HubError(f"{spec}: no Hugging Face repo {repo} (or it is private: log in with `hf auth login`)") \
                from None
        except EntryNotFoundError:
            continue
        except (HfHubHTTPError, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise HubError(f"{spec}: cannot download {file} from {repo} ({first})") from None
    if len(files) == 1:
        raise HubError(f"{spec}: repo {repo} has no file {files[0]}")
    raise HubError(f"{spec}: repo {repo} has neither {' nor '.join(files)}; name the checkpoint file: "
                   f"hf-hub:{repo}/FILE (e.g. hf-hub:apple/TiC-CLIP-basic-cumulative/checkpoints/2016.pt)")


__all__ = ["HF_PREFIX", "HubError", "WEIGHT_FILES", "check_tag_model", "hub_label", "is_hub_name", "parse_hf",
           "pretrained_tag", "resolve"]
