"""Small synthetic webdataset shards (img2dataset layout: <key>.jpg/.png, .txt, .json with "uid") and
uid → timestamp tables for the reshard tests and benchmark."""

from __future__ import annotations

import io
import json
import os
import tarfile


def tiny_png(shade: int = 0, size: tuple[int, int] = (2, 2)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (shade % 256, 40, 90)).save(buf, format="PNG")
    return buf.getvalue()


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_input_shard(path: str, samples: list[dict]) -> None:
    """``samples``: dicts with key, and any of image (bytes), ext (default png), caption (str), meta (dict or raw bytes)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for s in samples:
            if s.get("image") is not None:
                add_member(tar, f"{s['key']}.{s.get('ext', 'png')}", s["image"])
            if s.get("caption") is not None:
                add_member(tar, f"{s['key']}.txt", s["caption"].encode("utf-8"))
            if s.get("meta") is not None:
                meta = s["meta"]
                add_member(tar, f"{s['key']}.json", meta if isinstance(meta, bytes) else json.dumps(meta).encode())


def write_table(path: str, rows: list[tuple], header=("uid", "timestamp")) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(header) + "\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")
    return path
