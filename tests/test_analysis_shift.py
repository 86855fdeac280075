"""Distribution shift (ticlip.analysis.shift), caption nouns and per-concept forgetting: pure functions
on hand-made inputs whose answers are worked out by hand or in closed form."""

import math
from collections import Counter

import numpy as np
import pytest

from ticlip.analysis.forgetting import concept_forgetting, image_to_text_hits
from ticlip.analysis.nouns import NounExtractor
from ticlip.analysis.shift import (concept_drift, fid, frechet_distance, gaussian_stats, noun_distribution, pairwise,
                                   top_nouns, tv_distance)


# ------------------------------------------------------------------------------ FID
def test_fid_of_identical_samples_is_zero():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-9)
    mu, S = gaussian_stats(x)
    assert frechet_distance(mu, S, mu, S) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form():
    # commuting covariances: d² = |μ1-μ2|² + Σ (√a_i − √b_i)²
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + 0 + (3 - 1) ** 2  # = 10
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # the same Gaussians in a rotated basis (the distance does not depend on the basis)
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    assert frechet_distance(Q @ mu1, Q @ np.diag(a) @ Q.T, Q @ mu2, Q @ np.diag(b) @ Q.T) == pytest.approx(expected)


def test_frechet_distance_of_non_commuting_covariances_matches_scipy_sqrtm():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    S1, S2 = A @ A.T + np.eye(4), B @ B.T + 0.5 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(S1 + S2 - 2 * sqrtm(S1 @ S2).real)
    assert frechet_distance(mu1, S1, mu2, S2) == pytest.approx(ref, rel=1e-8)


def test_fid_of_samples_approaches_the_closed_form():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20000, 2))  # N(0, I)
    y = rng.normal(size=(20000, 2)) * 2 + np.array([3.0, 0.0])  # N((3, 0), 4 I)
    assert fid(x, y) == pytest.approx(9 + 2 * (2 - 1) ** 2, rel=0.03)  # = 11


def test_fid_with_fewer_samples_than_dimensions_stays_real_and_non_negative():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(5, 32)), rng.normal(size=(6, 32))  # singular covariances
    d = fid(x, y)
    assert math.isfinite(d) and d > 0
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="n >= 2"):
        fid(x[:1], y)


# ------------------------------------------------------------------------------- TV
def test_tv_distance_on_hand_made_counts():
    assert tv_distance([2, 2, 0], [0, 2, 2]) == pytest.approx(0.5)  # (.5,.5,0) vs (0,.5,.5)
    assert tv_distance([1, 0], [0, 3]) == pytest.approx(1.0)  # disjoint
    assert tv_distance([1, 3], [2, 6]) == pytest.approx(0.0)  # same distribution, other totals
    assert tv_distance([3, 1, 0], [1, 1, 2]) == pytest.approx(0.5 * (0.5 + 0 + 0.5))
    assert math.isnan(tv_distance([0, 0], [1, 1]))
    with pytest.raises(ValueError):
        tv_distance([1, 2], [1, 2, 3])


def test_top_nouns_and_their_distribution():
    steps = [Counter({"cat": 3, "dog": 1}), Counter({"dog": 4, "car": 2, "ant": 2})]
    assert top_nouns(steps, 3) == ["dog", "cat", "ant"]  # 5, 3, then ant before car (tie, alphabetical)
    np.testing.assert_allclose(noun_distribution(steps[0], ["dog", "cat", "ant"]), [0.25, 0.75, 0.0])
    np.testing.assert_allclose(noun_distribution(Counter({"zebra": 2}), ["dog", "cat"]), [0.0, 0.0])


def test_pairwise_is_symmetric_with_a_zero_diagonal():
    dists = [np.array([1.0, 0, 0]), np.array([0.5, 0.5, 0]), np.array([0, 0, 1.0])]
    D = pairwise(dists, tv_distance)
    np.testing.assert_allclose(D, [[0, 0.5, 1.0], [0.5, 0, 1.0], [1.0, 1.0, 0]])
    np.testing.assert_array_equal(D, D.T)


# ---------------------------------------------------------------------------- drift
def test_concept_drift_lists_new_concepts_first_then_growth():
    step0 = [["cat"], ["cat", "dog"], ["dog"], ["car"]]
    step1 = [["cat"]] * 4 + [["bus"], ["bus", "dog"]]
    drift = concept_drift([step0, step1], top=5, min_count=2, examples=1)
    assert [c.noun for c in drift[0]] == ["cat", "dog"]  # car: n=1 < min_count
    assert all(c.new and c.previous_share == 0 for c in drift[0])
    assert [c.noun for c in drift[1]] == ["bus", "cat"]  # dog: n=1; bus new; cat 4/6 against 2/4 before
    bus, cat = drift[1]
    assert (bus.new, bus.n, bus.share, bus.examples) == (True, 2, pytest.approx(2 / 6), [4])
    assert (cat.new, cat.n) == (False, 4)
    assert cat.growth == pytest.approx(4 / 6 - 2 / 4)
    # a concept that shrinks is not listed
    assert [c.noun for c in concept_drift([step0, [["cat"], ["dog"], ["dog"], ["dog"]]], min_count=1)[1]] == ["dog"]


# ---------------------------------------------------------------------------- nouns
@pytest.fixture
def mini_wordnet(tmp_path):
    """A WordNet directory with five noun lemmas (index.noun), an exception (noun.exc), no synsets."""
    (tmp_path / "index.noun").write_text("  1 license line\ncat n 1 0 1 0 00000001\nsea_lion n 1 0 1 0 00000002\n"
                                         "sea n 1 0 1 0 00000003\nmouse n 1 0 1 0 00000004\na n 1 0 1 0 00000005\n"
                                         "box n 1 0 1 0 00000006\n")
    (tmp_path / "data.noun").write_text("")
    (tmp_path / "noun.exc").write_text("mice mouse\n")
    return str(tmp_path)


def test_noun_extractor_finds_longest_lemmas_singulars_and_skips_function_words(mini_wordnet):
    ex = NounExtractor(mini_wordnet)
    assert ex.nouns("A sea lion and two Cats by the sea") == ["sea lion", "cat", "sea"]
    assert ex.nouns("three mice in boxes; 42 mice") == ["mouse", "box", "mouse"]
    assert ex.nouns("nothing here") == []
    assert ex.counts(["cats and a cat", "a mouse", "cat"]) == Counter({"cat": 2, "mouse": 1})


# ----------------------------------------------------------------------- forgetting
def test_image_to_text_hits_on_hand_made_features():
    img = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    txt = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    # image 0: its caption ties with caption 1 → a miss (ties count against); image 1 finds caption 2
    # (0.8) above its own (0.0); image 2 finds its own (1.0)
    np.testing.assert_array_equal(image_to_text_hits(img, txt), [False, False, True])
    np.testing.assert_array_equal(image_to_text_hits(np.eye(3), np.eye(3)), [True, True, True])


def test_concept_forgetting_known_answer():
    nouns = [
        [["cat"], ["cat", "dog"], ["cat"], ["dog"], ["bird"]],  # step 0
        [["dog"], ["fish"], ["fish"], ["fish"], ["cat"]],  # step 1
    ]
    intro = [[True, True, False, True, True], [True, True, True, False, True]]
    last = [[False, True, False, False, True], [True, True, False, False, False]]
    rows = concept_forgetting(nouns, intro, last, min_count=2, examples=5)
    got = {r.noun: (r.step, r.n, r.recall_intro, r.recall_last, r.examples) for r in rows}
    assert got == {
        "cat": (0, 3, pytest.approx(2 / 3), pytest.approx(1 / 3), [0]),  # pairs 0,1,2 of step 0
        "dog": (0, 2, 1.0, 0.5, [3]),  # pairs 1,3 of step 0; its step-1 pair is not used (introduced at 0)
        "fish": (1, 3, pytest.approx(2 / 3), pytest.approx(1 / 3), [2]),
    }  # bird: n=1 < min_count, left out
    assert [r.noun for r in rows] == ["dog", "cat", "fish"]  # drop 0.5, then 1/3 and 1/3 by name
    assert rows[0].drop == pytest.approx(0.5)
    # a concept too rare at its first step is introduced where it first reaches min_count
    rows = concept_forgetting([[["cat"]], [["cat"], ["cat"]]], [[True], [True, False]], [[True], [False, False]],
                              min_count=2)
    assert [(r.noun, r.step, r.n, r.recall_intro, r.recall_last) for r in rows] == [("cat", 1, 2, 0.5, 0.0)]
    with pytest.raises(ValueError):
        concept_forgetting(nouns, intro[:1], last)
