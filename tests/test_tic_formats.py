"""Readers of the released TiC-CLIP formats (ticlip.data.tic_formats) on small files written in exactly
the released layouts, and `ticlip data build --format` / `--eval-uids` / `ticlip data tic-timestamps`.

Layouts (apple/ml-tic-clip): README.md "TiC-DataComp UIDs" and dataset_creation/tic-datacomp/
generate_eval_uids.py (uid files: NumPy ``u8,u8``; eval lists: year -> uids / year -> synset -> uids);
dataset_creation/tic-yfcc15m/create_splits.py (yfcc15m.csv with YFCC100M's columns, images at
key[:3]/key[3:6]/key.jpg); dataset_creation/tic-redcaps/create_splits.py and the RedCaps annotation
files (annotations/<subreddit>_<year>.json with an "annotations" list).
"""

import csv
import datetime as dt
import json
import os
import pickle
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ticlip.cli import main
from ticlip.data.build import check_build_request
from ticlip.data.stream import TimeStream
from ticlip.data.tic_formats import (
    FormatError,
    read_eval_uids,
    read_tic_datacomp_timestamps,
    redcaps_records,
    uid_from_pair,
    yfcc15m_records,
    yfcc_caption,
)
from ticlip.schema import ConfigError

UIDS = [f"{i:032x}" for i in range(1, 9)] + ["ffffffffffffffff0000000000000001"]


def as_u8u8(uids):
    """DataComp's 128-bit uid hashes as generate_eval_uids.py stores them (first/second 16 hex digits)."""
    return np.array([(int(u[:16], 16), int(u[16:], 16)) for u in uids], np.dtype("u8,u8"))


def unix(y, m=6, d=1):
    return int((dt.datetime(y, m, d) - dt.datetime(1970, 1, 1)).total_seconds())


# --------------------------------------------------------------------------- TiC-DataComp uid files
def test_uid_pairs_round_trip():
    arr = as_u8u8(UIDS)
    assert [uid_from_pair(a, b) for a, b in arr.tolist()] == UIDS


def test_yearly_and_monthly_uid_files(tmp_path):
    yearly = tmp_path / "tic-datacomp_training_yearly_noeval"
    yearly.mkdir()
    np.save(yearly / "2014.npy", as_u8u8(UIDS[:3]))
    np.save(yearly / "2015.npy", as_u8u8(UIDS[3:5]))
    assert list(read_tic_datacomp_timestamps(str(yearly))) == [
        (UIDS[0], "2014"), (UIDS[1], "2014"), (UIDS[2], "2014"), (UIDS[3], "2015"), (UIDS[4], "2015")]
    # the CDN's monthly archive: <YYYY>.tar holding <YYYY>/<YYYYMM>.npy
    staging = tmp_path / "staging" / "2016"
    staging.mkdir(parents=True)
    np.save(staging / "201603.npy", as_u8u8(UIDS[5:7]))
    np.save(staging / "201611.npy", as_u8u8(UIDS[7:]))
    with tarfile.open(tmp_path / "2016.tar", "w") as tar:
        tar.add(staging, arcname="2016")
    assert list(read_tic_datacomp_timestamps(str(tmp_path / "2016.tar"))) == [
        (UIDS[5], "2016-03"), (UIDS[6], "2016-03"), (UIDS[7], "2016-11"), (UIDS[8], "2016-11")]

    out = tmp_path / "uid_ts.parquet"
    assert main(["data", "tic-timestamps", str(yearly), str(tmp_path / "2016.tar"), "--out", str(out)]) == 0
    t = pq.read_table(out).to_pydict()
    assert t["uid"] == UIDS and t["timestamp"] == ["2014"] * 3 + ["2015"] * 2 + ["2016-03"] * 2 + ["2016-11"] * 2


def test_uid_file_errors(tmp_path):
    np.save(tmp_path / "recent.npy", as_u8u8(UIDS[:1]))
    with pytest.raises(FormatError, match="YYYY.npy or YYYYMM.npy"):
        list(read_tic_datacomp_timestamps(str(tmp_path / "recent.npy")))
    np.save(tmp_path / "2014.npy", np.zeros((2, 3)))
    with pytest.raises(FormatError, match="not an array of uids"):
        list(read_tic_datacomp_timestamps(str(tmp_path / "2014.npy")))


# --------------------------------------------------------------------------- eval uid lists
def test_eval_uid_lists(tmp_path):
    # tic-datacomp_retrieval_evals_year2uids.pkl: year -> list of uid strings
    with open(tmp_path / "tic-datacomp_retrieval_evals_year2uids.pkl", "wb") as f:
        pickle.dump({"2014": UIDS[:2], "2015": UIDS[2:3]}, f)
    assert read_eval_uids(str(tmp_path / "tic-datacomp_retrieval_evals_year2uids.pkl")) == {
        "2014": set(UIDS[:2]), "2015": {UIDS[2]}}
    # tic-datacompnet_year2uids.pkl: year -> synset -> uids, in NumPy arrays (the pickle's numpy imports)
    with open(tmp_path / "tic-datacompnet_year2uids.pkl", "wb") as f:
        pickle.dump({2016: {"n01440764": np.array(UIDS[3:5]), "n01443537": np.array(UIDS[5:6])}}, f)
    assert read_eval_uids(str(tmp_path / "tic-datacompnet_year2uids.pkl")) == {"2016": set(UIDS[3:6])}
    with open(tmp_path / "p5.pkl", "wb") as f:  # protocol 5 pickles arrays through numpy's _frombuffer
        pickle.dump({2016: {"n01440764": as_u8u8(UIDS[3:5])}}, f, protocol=5)
    assert read_eval_uids(str(tmp_path / "p5.pkl")) == {"2016": set(UIDS[3:5])}
    # the .json twin on the Hugging Face dataset
    (tmp_path / "y2u.json").write_text(json.dumps({"2017": {"n01440764": UIDS[6:8]}}))
    assert read_eval_uids(str(tmp_path / "y2u.json")) == {"2017": set(UIDS[6:8])}
    # generate_eval_uids.py's eval/retrieval/<year>.npy
    d = tmp_path / "eval" / "retrieval"
    d.mkdir(parents=True)
    np.save(d / "2018.npy", as_u8u8(UIDS[:2]))
    assert read_eval_uids(str(d)) == {"2018": set(UIDS[:2])}


def test_eval_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"2014": [Evil()]}, f)
    with pytest.raises(FormatError, match="refusing to load"):
        read_eval_uids(str(tmp_path / "evil.pkl"))


# --------------------------------------------------------------------------- YFCC15M
YFCC_COLUMNS = ["photoid", "uid", "unickname", "datetaken", "dateuploaded", "capturedevice", "title",
                "description", "usertags", "machinetags", "longitude", "latitude", "accuracy", "pageurl",
                "downloadurl", "licensename", "licenseurl", "serverid", "farmid", "secret", "secretoriginal",
                "ext", "marker", "key"]


def _jpeg(path, colour):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (24, 20), colour).save(path, "JPEG")


def yfcc_files(tmp_path, years):
    images = tmp_path / "images"
    rows = []
    for i, year in enumerate(years):
        key = f"{i:03d}abc{i:026x}"
        _jpeg(str(images / key[:3] / key[3:6] / f"{key}.jpg"), (10 * i % 255, 40, 200 - 5 * i))
        row = dict.fromkeys(YFCC_COLUMNS, "")
        row.update(photoid=str(1000 + i), uid=f"user{i % 3}@N00", datetaken=f"{year}-05-01 10:00:00.0",
                   dateuploaded=str(unix(year)), title=f"photo+number+{i}",
                   description="a+%3Cb%3Ered%3C%2Fb%3E+bike" if i == 0 else f"scene+{i}+outdoors",
                   usertags="bike,red", key=key, marker="0", ext="jpg")
        rows.append(row)
    path = tmp_path / "yfcc15m.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, YFCC_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return str(path), str(images)


def test_yfcc_caption_as_tic_makes_it():
    assert yfcc_caption("photo+1", "a+%3Cb%3Ered%3C%2Fb%3E+bike+%26amp%3B+me", "bike,red") == \
        "photo 1. a red bike & me. bike,red"
    assert yfcc_caption("t", float("nan"), None) == "t. . "
    assert len(yfcc_caption("x" * 600, "", "")) == 500


def test_yfcc15m_records(tmp_path):
    path, images = yfcc_files(tmp_path, [2007, 2010])
    recs = list(yfcc15m_records(path, images))
    assert [r.uid for r in recs] == ["1000", "1001"]  # photoid, not the user id in YFCC's uid column
    assert recs[0].caption == "photo number 0. a red bike. bike,red"
    assert recs[0].timestamp == str(unix(2007)) and os.path.isfile(recs[0].image)
    assert recs[0].image.endswith(os.path.join("000", "abc", "000abc" + "0" * 26 + ".jpg"))


def test_yfcc15m_build_and_eval_uids(tmp_path, capsys):
    years = [2006, 2008, 2009, 2010, 2011, 2012, 2013, 2014] * 3
    path, images = yfcc_files(tmp_path, years)
    eval_list = tmp_path / "eval_uids.txt"
    chosen = {"1000", "1009", "1018", "1004", "1007"}  # photoids of years 2006, 2008, 2009, 2011, 2014
    eval_list.write_text("\n".join(sorted(chosen)) + "\n")
    out = str(tmp_path / "s")
    assert main(["data", "build", path, "--format", "yfcc15m", "--images", images, "--out", out,
                 "--eval-uids", str(eval_list), "--validation-size", "0", "--max-image-side", "16",
                 "--workers", "1", "--quiet"]) == 0
    s = TimeStream.load(out)
    assert s.labels == ["≤2008", "2009–2010", "2011–2012", "2013–2014"]  # TiC-YFCC's year groups
    assert s.provenance["source"] == "yfcc15m" and s.provenance["source_params"]["path"] == path
    held = {s.labels[i]: {m["uid"] for m in s.eval_set(i).meta} for i in range(4)}
    assert held == {"≤2008": {"1000", "1009"}, "2009–2010": {"1018"}, "2011–2012": {"1004"}, "2013–2014": {"1007"}}
    assert sum(st.train.count for st in s.steps) == len(years) - 5


def test_yfcc15m_errors_are_one_line(tmp_path):
    path, images = yfcc_files(tmp_path, [2010])
    with pytest.raises(ConfigError) as e:
        check_build_request("yfcc15m", {}, {"path": path, "images": str(tmp_path / "nowhere")})
    assert "images=" in str(e.value) and "\n" not in str(e.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("photoid,title\n1,x\n")
    with pytest.raises(ConfigError, match="no column 'dateuploaded'"):
        check_build_request("yfcc15m", {}, {"path": str(bad)})
    with pytest.raises(ConfigError, match="needs option path"):
        check_build_request("yfcc15m", {}, {})
    with pytest.raises(ConfigError, match="eval_uids.*no such file"):
        check_build_request("yfcc15m", {"eval_uids": str(tmp_path / "none.pkl")}, {"path": path})


# --------------------------------------------------------------------------- RedCaps
def redcaps_files(tmp_path, posts):
    """posts: (subreddit, file year, created year, month); the annotation files and images."""
    ann_dir, images = tmp_path / "annotations", tmp_path / "images"
    files: dict = {}
    for i, (sub, file_year, year, month) in enumerate(posts):
        image_id = f"ab{i:04d}"
        _jpeg(str(images / sub / f"{image_id}.jpg"), (30 * i % 255, 90, 20))
        files.setdefault(f"{sub}_{file_year}.json", []).append({
            "image_id": image_id, "author": f"u{i}", "url": f"https://i.redd.it/{image_id}.jpg",
            "raw_caption": f"My {sub} number {i} [OC]", "caption": f"my {sub} number {i}",
            "subreddit": sub, "score": 10 + i, "created_utc": float(unix(year, month)),
            "permalink": f"/r/{sub}/comments/{image_id}/", "crosspost_parents": None})
    ann_dir.mkdir()
    for name, anns in files.items():
        (ann_dir / name).write_text(json.dumps({"info": {"subreddit": name.split("_")[0]}, "annotations": anns}))
    return str(ann_dir), str(images)


def test_redcaps_records_and_build(tmp_path):
    posts = [("itookapicture", 2017, 2012, 3), ("itookapicture", 2017, 2017, 8), ("earthporn", 2018, 2018, 1),
             ("earthporn", 2019, 2019, 6), ("earthporn", 2020, 2020, 12)] * 2
    ann_dir, images = redcaps_files(tmp_path, posts)
    recs = list(redcaps_records(ann_dir, images))
    assert len(recs) == 10 and {r.uid for r in recs} == {f"ab{i:04d}" for i in range(10)}
    first = next(r for r in recs if r.uid == "ab0000")
    assert first.caption == "my itookapicture number 0" and first.extra["subreddit"] == "itookapicture"
    assert first.image == os.path.join(images, "itookapicture", "ab0000.jpg")
    assert [r.image for r in redcaps_records(ann_dir)][:1][0].startswith("https://i.redd.it/")

    out = str(tmp_path / "s")
    assert main(["data", "build", ann_dir, "--format", "redcaps", "--images", images, "--out", out,
                 "--eval-size", "1", "--validation-size", "0", "--max-image-side", "16", "--workers", "1",
                 "--quiet"]) == 0
    s = TimeStream.load(out)
    assert s.labels == ["≤2017", "2018", "2019", "2020"]  # the annotation files' years
    assert [st.train.count + st.eval["retrieval"].count for st in s.steps] == [4, 2, 2, 2]


def test_redcaps_not_annotations(tmp_path):
    d = tmp_path / "annotations"
    d.mkdir()
    (d / "pics_2018.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ConfigError, match="no \"annotations\" list"):
        check_build_request("redcaps", {}, {"path": str(d)})


# --------------------------------------------------------------------------- DataComp metadata + uid files
def test_tic_datacomp_metadata_join(tmp_path):
    import pyarrow as pa

    from ticlip.data.tic_formats import tic_datacomp_records

    meta = tmp_path / "metadata"
    meta.mkdir()
    pq.write_table(pa.table({"uid": UIDS[:4], "url": [f"https://x/{i}.jpg" for i in range(4)],
                             "text": [f"caption {i}" for i in range(4)], "original_width": [300] * 4}),
                   meta / "0000.parquet")
    ts = tmp_path / "yearly"
    ts.mkdir()
    np.save(ts / "2016.npy", as_u8u8(UIDS[:1]))
    np.save(ts / "2019.npy", as_u8u8(UIDS[2:3]))
    out = list(tic_datacomp_records(str(meta), str(ts)))
    got = [(r.uid, r.timestamp, r.caption) for r in out if hasattr(r, "uid")]
    assert got == [(UIDS[0], "2016", "caption 0"), (UIDS[2], "2019", "caption 2")]
    assert [r.reason for r in out if not hasattr(r, "uid")] == ["no_timestamp", "no_timestamp"]
    with pytest.raises(ConfigError, match="needs timestamps=DIR"):
        check_build_request("tic-datacomp", {}, {"path": str(meta)})
