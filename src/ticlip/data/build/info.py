"""Describing a built stream: its per-step table, the build's counts and whether they add up
(``format_info``: the manifest's own numbers and a stat of every local shard file), and ``verify_stream``
(``ticlip data info --verify``): every shard read, every sample decoded, the counts compared."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ticlip.data.shards import SkipCount, decode_or_skip, tar_samples
from ticlip.data.stream import TimeStream, decode_sample


def count_check(stream: TimeStream) -> tuple[bool, str]:
    """Whether the manifest's counts add up, and a line saying so (or how they do not)."""
    c = stream.provenance.get("counts")
    if not c:
        return False, "no build counts in this manifest (not made by `ticlip data build`)"
    train = sum(s.train.count for s in stream.steps)
    ev = sum(es.count for s in stream.steps + stream.held_out for es in s.eval.values())  # held out: task streams
    val = sum(stream.validation_count(s) for s in stream.steps)
    skipped, filtered = sum(c["skipped"].values()), sum(c["filtered"].values())
    expect = c["input_rows"] - skipped - filtered - c["duplicates"] - c["dropped_out_of_range"]
    ok = train + ev + val == expect
    held = f"eval {ev} + validation {val}" if stream.has_validation else f"eval {ev}"
    line = (f"train {train} + {held} = {train + ev + val} {'==' if ok else '!='} input {c['input_rows']} "
            f"- skipped {skipped} - filtered {filtered} - duplicates {c['duplicates']} "
            f"- dropped {c['dropped_out_of_range']} = {expect}")
    return ok, line


def format_info(stream: TimeStream) -> str:
    """A per-step table of the stream and, under it, the build's counts and their check."""
    tasks = stream.eval_tasks()
    val = stream.has_validation  # a column only for streams built with validation sets
    head = (["step", "label", "range", "periods", "train"] + [f"eval:{t}" for t in tasks]
            + (["validation"] if val else []) + ["shards"])

    def n_shards(s) -> int:
        return (len(s.train.shards) + sum(len(e.shards) for e in s.eval.values())
                + (len(s.validation.shards) if s.validation is not None else 0))

    body = []
    for s in stream.steps:
        if len(s.periods) > 1:
            periods = f"{s.periods[0]}..{s.periods[-1]} ({len(s.periods)})"
        else:
            periods = "".join(s.periods)
        body.append([str(s.index), s.label, f"{s.start}..{s.end}", periods, str(s.train.count)]
                    + [str(s.eval[t].count) if t in s.eval else "-" for t in tasks]
                    + ([str(s.validation.count) if s.validation is not None else "-"] if val else [])
                    + [str(n_shards(s))])
    total = ["", "total", "", "", str(sum(s.train.count for s in stream.steps))] + [
        str(sum(s.eval[t].count for s in stream.steps if t in s.eval)) for t in tasks
    ] + ([str(sum(stream.validation_count(s) for s in stream.steps))] if val else []) + [
        str(sum(n_shards(s) for s in stream.steps))]
    rows = [head] + body + [total]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    right = {4, len(head) - 1} | {5 + k for k in range(len(tasks) + int(val))}

    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    lines = [f"stream {stream.name!r} ({stream.granularity}), {len(stream.steps)} steps, {stream.root}", ""]
    lines += [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in body] + [fmt(total), ""]
    if stream.held_out:  # a task stream's held-out tasks: evaluated, never trained on (not steps)
        lines += ["held out (never trained on): " + ", ".join(
            f"{s.label} ({len(s.classes or [])} classes, eval {sum(e.count for e in s.eval.values())})"
            for s in stream.held_out), ""]
    c = stream.provenance.get("counts")
    if c:
        def kv(d):
            return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

        lines += [
            f"input rows:   {c['input_rows']}",
            f"skipped:      {sum(c['skipped'].values())} ({kv(c['skipped'])})",
            f"filtered:     {sum(c['filtered'].values())} ({kv(c['filtered'])})",
            f"duplicates:   {c['duplicates']}",
            f"dropped:      {c['dropped_out_of_range']} (after the last step end)",
        ]
        if c.get("source_skipped"):
            lines.append(f"left out by the source (not input rows): {kv(c['source_skipped'])}")
    ok, line = count_check(stream)
    lines.append(f"check:        {line} {'OK' if ok else 'MISMATCH'}" if c else f"check:        {line}")
    missing = stream.missing_shards()
    if missing:
        st, name, path = missing[0]
        lines.append(f"files:        {len(missing)} shard file(s) MISSING, first step {st.label!r} {name}: {path}")
    lines.append("checked:      the manifest's counts and that its shard files exist; `ticlip data info --verify` "
                 "reads every shard and decodes every image")
    for w in stream.provenance.get("warnings", []):
        lines.append(f"warning:      {w}")
    return "\n".join(lines)


@dataclass
class Verification:
    """What ``verify_stream`` found: pairs read per shard set and the problems (empty: all as claimed)."""

    sets: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_stream(stream: TimeStream, progress: Callable[[str], None] | None = None) -> Verification:
    """Read every shard of every shard set (train, eval, validation) of ``stream``, decode every
    sample, and compare what was read with the manifest's counts. Missing files, unreadable
    (truncated) shards, undecodable images and count mismatches each become one problem line."""
    import webdataset as wds

    out = Verification()
    missing = {(st.index, name): path for st, name, path in stream.missing_shards()}
    for st in stream.steps + stream.held_out:  # held out: a task stream's never-trained tasks
        for name, shard_set in st.shard_sets():
            out.sets += 1
            where = f"step {st.label!r} {name}"
            if (st.index, name) in missing:
                out.problems.append(f"{where}: shard file missing: {missing[(st.index, name)]}")
                continue
            if progress is not None:
                progress(f"verifying {where} ({len(shard_set.shards)} shards)")
            skipped = SkipCount()
            urls = [stream.resolve(u) for u in shard_set.shards]
            n = sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(urls), tar_samples(skipped),
                                                decode_or_skip(decode_sample, skipped))) if urls else 0
            out.samples += n
            bad = {k: v for k, v in skipped.as_dict().items() if v}
            if bad:
                out.problems.append(f"{where}: " + ", ".join(f"{v} {k}(s)" for k, v in bad.items()))
            if n != shard_set.count:
                out.problems.append(f"{where}: the manifest claims {shard_set.count} pairs, its shards hold {n} "
                                    "readable ones")
    return out


def format_verification(v: Verification) -> str:
    head = (f"verify:       read {v.sets} shard sets, {v.samples} pairs decoded: "
            + ("every count as the manifest claims, every image decodable OK" if v.ok
               else f"{len(v.problems)} problem(s) FAILED"))
    return "\n".join([head] + [f"problem:      {p}" for p in v.problems])


__all__ = ["Verification", "count_check", "format_info", "format_verification", "verify_stream"]
