"""Describing a built stream: its per-step table, the build's counts and whether they add up."""

from __future__ import annotations

from ticlip.data.stream import TimeStream


def count_check(stream: TimeStream) -> tuple[bool, str]:
    """Whether the manifest's counts add up, and a line saying so (or how they do not)."""
    c = stream.provenance.get("counts")
    if not c:
        return False, "no build counts in this manifest (not made by `ticlip data build`)"
    train = sum(s.train.count for s in stream.steps)
    ev = sum(es.count for s in stream.steps for es in s.eval.values())
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
    for w in stream.provenance.get("warnings", []):
        lines.append(f"warning:      {w}")
    return "\n".join(lines)


__all__ = ["count_check", "format_info"]
