"""report.html renders offline in headless Chromium and every figure (the heatmaps included) decodes."""

import os
import re
import shutil
import subprocess

import pytest

from test_report import fabricate_run, seq_matrix

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`; "
                    "scripts/install-system-deps.sh installs it)")
def test_report_html_images_load_in_chromium(tmp_path):
    from ticlip.report import write_report

    runs = [fabricate_run(tmp_path, f"m{k}", f"method-{k}", 0, seq_matrix(0.05 * k),
                          static={"digits": [0.5, 0.6, 0.7]}) for k in range(2)]
    files = write_report(runs, str(tmp_path / "report"))
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-extensions", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--dump-dom", "file://" + os.path.abspath(files.html)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stdout[:500]
    # the page's own check: every <img> has naturalWidth > 0 once loaded
    assert 'data-images="ok"' in body.group(0), body.group(0)
    count = int(re.search(r'data-image-count="(\d+)"', body.group(0)).group(1))
    assert count == len(files.plots)
    assert sum("heatmap_" in os.path.basename(p) for p in files.plots) == 2
    assert "Summary (TiC-CLIP Table 2 layout)" in proc.stdout


def _fabricate_verdict_runs(root):
    """Oracle, cumulative-all and sequential with three seeds each (paired tests), one run that stayed at
    chance, all on a real toy stream (contact sheets) with training logs and wall times."""
    import json

    import numpy as np
    from test_report_stats import N, base, fabricate

    from ticlip.data.toy import make_toy_stream
    from ticlip.run_layout import RunInfo

    stream = make_toy_stream(str(root / "toy"), steps=3)
    runs = []
    for method, shift, k in (("oracle", 0.10, 0), ("cumulative-all", 0.05, 10), ("sequential", 0.0, 20)):
        runs += [fabricate(str(root), f"{method}-s{s}", method, s, base(shift, seed=k + s)) for s in range(3)]
    runs.append(fabricate(str(root), "broken", "sequential-lr10", 0, np.full((3, 3, 3), 1 / N)))
    for run_dir in runs:
        info = RunInfo.load(run_dir)
        info.stream = stream.root
        if info.method == "oracle":  # twice the others' compute
            for s in info.steps:
                s.cumulative_macs *= 2
        info.extra["seconds"] = {str(i): 30.0 for i in range(3)}  # 90 s of training
        info.save(run_dir)
        with open(os.path.join(stream.root, "stream.json"), encoding="utf-8") as f:
            manifest = f.read()
        with open(os.path.join(run_dir, "stream.json"), "w", encoding="utf-8") as f:
            f.write(manifest)
        for i in range(3):
            os.makedirs(os.path.join(run_dir, "steps", str(i)), exist_ok=True)
            with open(os.path.join(run_dir, "steps", str(i), "train_log.jsonl"), "w", encoding="utf-8") as f:
                for it in (1, 2):
                    f.write(json.dumps({"step": i, "phase": "main", "iteration": it, "loss": 3.0 - 0.1 * (2 * i + it),
                                        "lr": 1e-3 / it}) + "\n")
    return stream, runs


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package `chromium`; "
                    "scripts/install-system-deps.sh installs it)")
@pytest.mark.slow  # a toy stream, ten runs' figures and contact sheets, then Chromium (about 20 s)
def test_report_gives_a_verdict_in_chromium(tmp_path):
    from ticlip.report import write_report
    from ticlip.report.verdict import compute_ratios, runs_at_chance, training_curves
    from ticlip.report.results import group_runs, load_runs

    stream, runs = _fabricate_verdict_runs(tmp_path)
    loaded = load_runs(runs)
    assert runs_at_chance(loaded) == {"broken": ["retrieval"]}
    ratios = compute_ratios(group_runs(loaded))
    assert ratios["oracle"] == pytest.approx(1.0) and ratios["sequential"] == pytest.approx(0.5)
    x, loss, lr = training_curves(loaded[0])
    assert list(x) == [1, 2, 3, 4, 5, 6] and lr[1] == pytest.approx(5e-4)  # iterations counted across steps

    files = write_report(runs, str(tmp_path / "report"))
    text = _chromium_dom(files.html, tmp_path)
    body = re.search(r"<body[^>]*>", text).group(0)
    assert 'data-images="ok"' in body, body
    assert int(re.search(r'data-image-count="(\d+)"', body).group(1)) == len(files.plots)
    verdict = re.search(r'<section id="verdict">(.*?)</section>', text, re.S).group(1)
    # the top of the page: Oracle is best on every retrieval column, +5 points over the reference,
    # significant by the paired t-test over three seeds; cumulative-all is the runner-up (the reference)
    assert text.index('id="verdict"') < text.index("Summary (TiC-CLIP Table 2 layout)")
    rows = re.findall(r"<tr><td>Dynamic retrieval: (\w+)</td><td class=\"best\">([\w-]+)</td><td>[\d.]+</td><td>([^<]+)</td>"
                      r"<td class=\"runner_up\">([\w-]+)</td>", verdict)
    assert {r[0] for r in rows} == {"Backward", "ID", "Forward"}, verdict
    assert all(best == "oracle" and re.fullmatch(r"\+5\.\d \*", mark) and second == "cumulative-all"
               for _, best, mark, second in rows), rows
    assert "<td>sequential</td><td>0.50×</td>" in verdict and "<td>oracle</td><td>1.00×</td>" in verdict
    assert "run broken stayed at chance on retrieval" in verdict
    assert "run oracle-s0 stayed at chance" not in verdict
    # the stream's sizes per step and a contact sheet per step
    sizes = re.search(r'<table class="stream-sizes">(.*?)</table>', text, re.S).group(1)
    for s in stream.steps:
        assert f"<td>{s.label}</td><td>{s.train.count}</td>" in sizes
    assert sum("sheet_" in os.path.basename(p) for p in files.plots) == 3
    # training curves and wall time
    assert "training_loss_lr.png" in {os.path.basename(p) for p in files.plots}
    assert "<td>oracle-s0</td><td>90.0 s</td>" in text


def _chromium_dom(path, tmp_path):
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-extensions", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--dump-dom", "file://" + os.path.abspath(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
