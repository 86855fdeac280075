"""Transfer metrics on hand-made matrices, each expected value written out from the definitions
(issue 4, TiC-CLIP §4 and its appendix), never taken from the function under test."""

import json
import math

import numpy as np
import pytest

from ticlip.eval.metrics import (
    MatrixError,
    backward_transfer,
    backward_transfer_normalised,
    forward_transfer,
    forward_transfer_normalised,
    in_domain,
    static_summary,
    transfer_metrics,
)
from ticlip.eval.results import read_matrix

# A Sequential-like run over 4 steps: good on the current step, forgets the past, weak on the future.
E4 = [
    [0.30, 0.10, 0.05, 0.02],
    [0.12, 0.35, 0.11, 0.04],
    [0.08, 0.15, 0.40, 0.12],
    [0.05, 0.09, 0.18, 0.42],
]


def test_three_metrics_follow_their_definitions():
    assert in_domain(E4) == pytest.approx((0.30 + 0.35 + 0.40 + 0.42) / 4)
    # strict lower triangle: (1,0) (2,0) (2,1) (3,0) (3,1) (3,2)
    assert backward_transfer(E4) == pytest.approx((0.12 + 0.08 + 0.15 + 0.05 + 0.09 + 0.18) / 6)
    # strict upper triangle: (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert forward_transfer(E4) == pytest.approx((0.10 + 0.05 + 0.02 + 0.11 + 0.04 + 0.12) / 6)


def test_normalised_variants_subtract_each_rows_in_domain_score():
    # Σ_i Σ_{j<i} (E[i,j] − E[i,i]) / (T(T−1)/2), T = 4 → 6 terms
    bwd = ((0.12 - 0.35) + (0.08 - 0.40) + (0.15 - 0.40) + (0.05 - 0.42) + (0.09 - 0.42) + (0.18 - 0.42)) / 6
    fwd = ((0.10 - 0.30) + (0.05 - 0.30) + (0.02 - 0.30) + (0.11 - 0.35) + (0.04 - 0.35) + (0.12 - 0.40)) / 6
    assert backward_transfer_normalised(E4) == pytest.approx(bwd)
    assert forward_transfer_normalised(E4) == pytest.approx(fwd)


def test_a_model_that_never_changes_has_equal_transfer_everywhere():
    # Restart-like: every row is the same model; a column's score does not depend on the row.
    col = [0.2, 0.3, 0.5]
    E = [col, col, col]
    m = transfer_metrics(E)
    assert m["in_domain"] == pytest.approx((0.2 + 0.3 + 0.5) / 3)
    assert m["backward"] == pytest.approx((0.2 + 0.2 + 0.3) / 3)
    assert m["forward"] == pytest.approx((0.3 + 0.5 + 0.5) / 3)
    assert m["missing"] == 0 and m["steps"] == 3


def test_single_step_has_no_transfer_and_missing_cells_are_left_out():
    m = transfer_metrics([[0.7]])
    assert m["in_domain"] == 0.7 and math.isnan(m["backward"]) and math.isnan(m["forward"])
    E = np.array(E4)
    E[3, :] = np.nan  # the last model is not evaluated yet
    m = transfer_metrics(E)
    assert m["missing"] == 4
    assert m["in_domain"] == pytest.approx((0.30 + 0.35 + 0.40) / 3)
    assert m["backward"] == pytest.approx((0.12 + 0.08 + 0.15) / 3)


def test_static_summary_is_last_and_mean():
    s = static_summary([0.1, 0.4, 0.25])
    assert s["last"] == 0.25 and s["mean"] == pytest.approx(0.75 / 3)
    s = static_summary([0.1, 0.3, float("nan")])
    assert s["last"] == 0.3 and s["missing"] == 1


@pytest.mark.parametrize("bad", [[[1, 2, 3], [4, 5, 6]], [1, 2, 3], [["a", "b"], ["c", "d"]]])
def test_non_square_or_non_numeric_is_a_clear_error(bad):
    with pytest.raises(MatrixError):
        in_domain(bad)


def _write(tmp_path, text, name="m.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


@pytest.mark.parametrize(
    "text",
    [
        "0.3,0.1\n0.2,0.4\n",  # bare numbers
        "model_step,2016,2017\n2016,0.3,0.1\n2017,0.2,0.4\n",  # our layout: labels as header and index
        ",2016,2017\n2016,0.3,0.1\n2017,0.2,0.4\n",  # pandas' to_csv layout
        ",≤2014,2015\n≤2014,0.3,0.1\n2015,0.2,0.4\n",
        "step,a,b\nx,0.3,0.1\ny,0.2,0.4\n",
    ],
)
def test_read_matrix_accepts_labels_as_header_and_index(tmp_path, text):
    E, rows, cols = read_matrix(_write(tmp_path, text))
    assert E.tolist() == [[0.3, 0.1], [0.2, 0.4]]
    assert len(rows) == len(cols) == 2


def test_read_matrix_keeps_the_labels_and_empty_cells(tmp_path):
    E, rows, cols = read_matrix(_write(tmp_path, "model_step,2016,2017\n2016,0.3,0.1\n2017,,\n"))
    assert cols == ["2016", "2017"] and rows == ["2016", "2017"]
    assert np.isnan(E[1]).all()


@pytest.mark.parametrize(
    "text, words",
    [
        ("model_step,2016,2017\n2016,0.3,abc\n2017,0.2,0.4\n", "not a number"),
        ("0.3,0.1,0.2\n0.2,0.4,0.1\n", "square"),
        ("", "empty"),
    ],
)
def test_read_matrix_errors_name_the_problem(tmp_path, text, words):
    with pytest.raises(MatrixError, match=words):
        read_matrix(_write(tmp_path, text))


def test_metrics_cli_prints_the_definitions_as_json(tmp_path, capsys):
    from ticlip.cli import main

    rows = "\n".join(f"{2016 + i}," + ",".join(str(v) for v in r) for i, r in enumerate(E4))
    path = _write(tmp_path, "model_step,2016,2017,2018,2019\n" + rows + "\n")
    assert main(["metrics", path]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["in_domain"] == pytest.approx((0.30 + 0.35 + 0.40 + 0.42) / 4)
    assert out["forward"] == pytest.approx((0.10 + 0.05 + 0.02 + 0.11 + 0.04 + 0.12) / 6)
    assert out["labels"] == ["2016", "2017", "2018", "2019"]


def test_metrics_cli_errors_are_one_line(tmp_path, capsys):
    from ticlip.cli import main

    assert main(["metrics", _write(tmp_path, "1,2,3\n4,5,6\n")]) == 2
    err = capsys.readouterr().err.strip()
    assert "square" in err and "\n" not in err
    assert main(["metrics", str(tmp_path / "absent.csv")]) == 2
    assert "no matrix file" in capsys.readouterr().err
