"""The builder's typed rows and its step planning, on their own (no images read, nothing written)."""

import dataclasses
import datetime as dt
import pickle

import pytest

from ticlip.data.build import BuildConfig, ImageRef, PlannedRow, Row, plan
from ticlip.data.build.plan import eval_count, fingerprint
from ticlip.data.build.rows import Counts, RowReader, Spool
from ticlip.data.records import Record


def row(seq, when, caption=None, uid=None, period=None):
    t = dt.datetime.fromisoformat(when)
    caption = caption or f"caption number {seq}"
    ident = f"img-{seq}"
    return Row(t, seq, period or str(t.year), caption, uid, ImageRef("file", f"/img/{seq}.png"), ident, None,
               ("uid", uid) if uid else ("content", caption, ident))


def test_planned_row_is_a_frozen_record_with_named_fields():
    ref = ImageRef("pixels", None, 10, 48, "RGB", 4, 4, 40, 40)
    r = PlannedRow("k", "a cat", "u1", "2016-01-02", "2016", "2016", {"x": 1}, ref, "ident")
    assert (r.key, r.uid, r.label, r.ref.mode, r.ref.original_width) == ("k", "u1", "2016", "RGB", 40)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.caption = "a dog"
    assert pickle.loads(pickle.dumps(r)) == r  # sent to worker processes
    # what the input fingerprint hashes: the old 9-tuple's fields, the image reference flattened
    assert r.fingerprint_fields() == ["k", "a cat", "u1", "2016-01-02", "2016", "2016", "{'x': 1}",
                                      "pixels", "10", "48", "RGB", "4", "4", "40", "40", "ident"]
    assert ImageRef("file", "/a.png").parts() == ("file", "/a.png")
    assert ImageRef("bytes", offset=3, length=9).parts() == ("bytes", 3, 9)


def test_plan_sorts_drops_dedups_and_splits_into_steps():
    rows = [row(0, "2016-05-01"), row(1, "2014-01-01"), row(2, "2015-03-01", uid="same"),
            row(3, "2015-02-01", uid="same"), row(4, "2019-01-01"), row(5, "2013-07-01"),
            row(6, "2016-05-01", caption="caption number 0")]  # same caption, other image: kept
    counts, warnings = Counts(input_rows=7), []
    config = BuildConfig(step_ends=["2014", "2015", "2017"], eval_fraction=0.5, eval_size=10)
    steps = plan(rows, counts, config, warnings)
    assert [s.label for s in steps] == ["≤2014", "2015", "2016–2017"]
    assert counts.dropped_out_of_range == 1 and counts.duplicates == 1  # 2019; the later uid "same"
    assert [sorted(r.uid for r in s.rows if r.uid == "same") for s in steps] == [[], ["same"], []]
    assert [len(s.rows) for s in steps] == [2, 1, 2] and [s.eval_n for s in steps] == [1, 0, 1]
    kept_same = steps[1].rows[0]
    assert kept_same.timestamp == "2015-02-01"  # the first in time, not the first in input
    assert all(isinstance(r, PlannedRow) and r.label == s.label for s in steps for r in s.rows)
    assert steps[0].periods == ["2013", "2014"] and (steps[0].start, steps[2].end) == ("2013-01-01", "2017-12-31")
    assert warnings == []


def test_plan_is_seeded_and_keys_stay_unique_without_dedup():
    def planned(seed):
        rows = [row(i, f"2016-01-{1 + i % 28:02d}", uid="dup" if i < 3 else None) for i in range(40)]
        return plan(rows, Counts(), BuildConfig(dedup=False, seed=seed, eval_size=5), [])

    a, b, c = planned(0), planned(0), planned(1)
    assert [r.key for r in a[0].rows] == [r.key for r in b[0].rows]
    assert [r.key for r in a[0].rows] != [r.key for r in c[0].rows]
    keys = [r.key for r in a[0].rows]
    assert len(set(keys)) == 40 and {"dup", "dup-1", "dup-2"} <= {r.uid for r in a[0].rows}
    assert fingerprint(a, Counts()) == fingerprint(b, Counts()) != fingerprint(c, Counts())


def test_eval_count_caps_small_steps_at_half_with_a_warning():
    warnings = []
    assert eval_count(10, BuildConfig(eval_size=8), "2016", warnings) == 5
    assert warnings == ["step 2016: 10 pairs, eval set capped at half (5); set eval_fraction for small steps"]
    assert eval_count(10, BuildConfig(eval_size=8, eval_fraction=0.3), "2016", warnings) == 3
    assert len(warnings) == 1


def test_steps_without_data_are_named_in_a_warning():
    warnings = []
    steps = plan([row(0, "2014-01-01"), row(1, "2016-01-01")], Counts(),
                 BuildConfig(step_ends=["2014", "2015", "2016"], eval_size=0), warnings)
    assert [s.label for s in steps] == ["≤2014", "2016"]
    assert warnings == ["no data for step(s) 2015: left out of the stream"]


def test_row_reader_interns_periods_per_build_only(tmp_path):
    """Rows of one period share one string, in a table that lives as long as its reader (one build)."""
    from PIL import Image

    def read(reader, i):
        reason, r = reader.read(Record(f"a red square {i}", f"2016-0{1 + i}-01", Image.new("RGB", (4, 4))), i)
        assert reason is None
        return r

    spool = Spool(str(tmp_path / "spool.bin"))
    first = RowReader(BuildConfig(), spool, str(tmp_path))
    a, b = read(first, 0), read(first, 1)
    assert a.period == b.period == "2016" and a.period is b.period
    assert a.ref.kind == "pixels" and a.dedup_key[0] == "content"
    second = RowReader(BuildConfig(), spool, str(tmp_path))
    read(second, 2)
    assert second._periods is not first._periods and list(second._periods) == ["2016"]
    spool.close()


def test_row_reader_reasons(tmp_path):
    spool = Spool(str(tmp_path / "spool.bin"))
    reader = RowReader(BuildConfig(language="ascii-english"), spool, str(tmp_path))
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(img)
    cases = [(Record("two words", "never", str(img)), "bad_timestamp"),
             (Record("  ", "2016", str(img)), "missing_caption"),
             (Record("two words", "2016", str(tmp_path / "nope.png")), "missing_image"),
             (Record("two words", "2016", object()), "unsupported_image"),
             (Record("one", "2016", str(img)), "filter:caption_words"),
             (Record("a b", "2016", str(img)), "filter:caption_chars"),
             (Record("пример подписи", "2016", str(img)), "filter:language")]
    assert [reader.read(rec, i)[0] for i, (rec, _) in enumerate(cases)] == [why for _, why in cases]
    reason, r = reader.read(Record("two words", "2016-03-04T05:06:07", str(img), uid=7, extra={"a": (1, 2)}), 9)
    assert reason is None and (r.uid, r.extra, r.seq, r.ref) == ("7", {"a": [1, 2]}, 9, ImageRef("file", str(img)))
    spool.close()
