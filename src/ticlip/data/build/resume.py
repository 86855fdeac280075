"""What makes builds resumable and idempotent: the build's identity and its hash, the state file
``<out>/.build/state.json``, and one marker per finished shard in ``<out>/.build/done/``.

A build is identified by its configuration (``BuildConfig.output_dict``), its source name and the
source's parameters; a re-run with the same identity and the same planned rows (the input
fingerprint) resumes, anything else is refused unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from ticlip.atomic import write_json_atomic
from ticlip.data.build.config import BUILD_DIR, BuildConfig, BuildError
from ticlip.data.build.rows import json_safe
from ticlip.data.stream import MANIFEST_NAME

IMAGE_CACHE = "image-cache"  # kept by --overwrite: fetching URLs again is slow


def identity(config: BuildConfig, source: str, source_params: dict | None) -> dict:
    """What identifies a build (stored in the state file; differences are named when refused)."""
    return {"config": config.output_dict(), "source": source, "source_params": json_safe(source_params or {})}


def config_hash(config: BuildConfig, source: str, source_params: dict | None) -> str:
    """A short hash of the build's identity (stored in the state file and the manifest)."""
    blob = json.dumps(identity(config, source, source_params), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class BuildState:
    """The paths of one output directory's build records."""

    def __init__(self, out: str):
        self.out = out
        self.build_dir = os.path.join(out, BUILD_DIR)
        self.state_path = os.path.join(self.build_dir, "state.json")
        self.done_dir = os.path.join(self.build_dir, "done")

    def prepare(self, chash: str, ident: dict, overwrite: bool) -> None:
        """Refuse an ``out`` holding another build (or a stream of no build), or clear it (``overwrite``)."""
        out = self.out
        has_stream = os.path.exists(os.path.join(out, MANIFEST_NAME)) or os.path.isdir(os.path.join(out, "steps"))
        if overwrite:
            self.clear()
            return
        if os.path.exists(self.state_path):
            state = _read_json(self.state_path)
            if state.get("config_hash") != chash:
                old = state.get("identity", {})
                hint = ""
                if "validation_size" in ident["config"] and "validation_size" not in old.get("config", ident["config"]):
                    hint = (" (it was built or started without validation sets: to keep it as it is, pass "
                            "--validation-size 0, in an experiment stream.build.validation_size: 0)")
                raise BuildError(
                    f"{out} holds a build with a different configuration ({diff(old, ident)}){hint}; "
                    "choose another --out, or pass --overwrite to replace it"
                )
        elif has_stream:
            raise BuildError(
                f"{out} already holds a stream that has no build record of this builder; "
                "choose another --out, or pass --overwrite to replace it"
            )

    def check_input(self, chash: str, input_fingerprint: str, ident: dict) -> None:
        """Refuse a resumed build of other input rows; record the state of a new build."""
        if os.path.exists(self.state_path):
            if _read_json(self.state_path).get("input_fingerprint") != input_fingerprint:
                raise BuildError(
                    f"{self.out} holds a build of different input rows (the table or source changed since); "
                    "choose another --out, or pass --overwrite to rebuild it"
                )
            return
        write_json_atomic(self.state_path, {"config_hash": chash, "input_fingerprint": input_fingerprint,
                                            "identity": ident})

    def clear(self) -> None:
        """Remove what a previous build wrote (not the URL image cache, nor other files)."""
        manifest = os.path.join(self.out, MANIFEST_NAME)
        if os.path.exists(manifest):
            os.remove(manifest)
        if os.path.isdir(os.path.join(self.out, "steps")):
            shutil.rmtree(os.path.join(self.out, "steps"))
        if os.path.isdir(self.build_dir):
            for entry in os.listdir(self.build_dir):
                if entry == IMAGE_CACHE:
                    continue
                p = os.path.join(self.build_dir, entry)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)

    # ---------------------------------------------------------------- shard markers
    def eval_marker(self, index: int) -> str:
        return os.path.join(self.done_dir, f"{index}-eval.json")

    def validation_marker(self, index: int) -> str:
        return os.path.join(self.done_dir, f"{index}-validation.json")

    def train_marker(self, index: int, chunk: int) -> str:
        return os.path.join(self.done_dir, f"{index}-train-{chunk:06d}.json")

    def read_marker(self, path: str, shards_key: str = "shards") -> dict | None:
        """The marker at ``path`` when it exists and all its shards still do (else: redo that work)."""
        if not os.path.exists(path):
            return None
        marker = _read_json(path)
        shards = marker.get(shards_key)
        shards = [shards] if isinstance(shards, str) else (shards or [])
        if all(os.path.exists(os.path.join(self.out, s)) for s in shards):
            return marker
        return None  # a shard vanished since: redo it


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def diff(old: dict, new: dict, prefix: str = "") -> str:
    """``a.b: old -> new; ...`` for every differing leaf of two nested mappings."""
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = diff(a, b, f"{prefix}{k}.")
            if sub:
                parts.append(sub)
        elif a != b:
            parts.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return "; ".join(parts)


__all__ = ["BuildState", "IMAGE_CACHE", "config_hash", "diff", "identity"]
