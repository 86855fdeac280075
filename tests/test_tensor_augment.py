"""The tensor augmentation of the memory path (ticlip.data.tensor_augment) draws the augmentations the PIL
train transform (ticlip.data.transforms.make_train_transform) draws: the same images through both paths
many times, statistics compared per component (glyph geometry, background, colour jitter, opaque crops)
and for the whole pipeline. Each comparison is also shown to fail when the tensor path lacks the
component it checks."""

import pytest
import torch
from PIL import Image, ImageDraw
from train_helpers import one_thread  # noqa: F401  (autouse fixture)

from ticlip.data.tensor_augment import ImageCache, TensorAugment, cache_side
from ticlip.data.transforms import make_train_transform, openai_mean_std

SIZE, N = 32, 1200
MEAN, STD = (torch.tensor(v).view(1, 3, 1, 1) for v in openai_mean_std())


def glyphs() -> list[Image.Image]:
    """Coloured disks with a translucent square, mostly 72 px like the Noto emoji, one smaller, one wide."""
    out = []
    colours = [(230, 40, 40), (40, 200, 60), (40, 80, 230), (250, 220, 40), (150, 60, 190), (20, 20, 20)]
    for i, c in enumerate(colours):
        w, h = (72, 72) if i < 4 else (37, 37) if i == 4 else (72, 48)
        im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        d = ImageDraw.Draw(im)
        d.ellipse((4, 4, w - 5, h - 5), fill=c + (255,))
        d.rectangle((w // 3, h // 3, w // 2, h // 2), fill=(255, 255, 255, 200))
        out.append(im)
    return out


def pil_path(images, n=N, **kw) -> torch.Tensor:
    """n outputs of make_train_transform, back in [0, 1]."""
    torch.manual_seed(0)
    tf = make_train_transform(SIZE, **kw)
    return torch.stack([tf(images[i % len(images)]) for i in range(n)]) * STD + MEAN


def tensor_path(images, n=N, **kw) -> torch.Tensor:
    cache = ImageCache.from_images(images, cache_side(SIZE))
    augment, g = TensorAugment(SIZE, **kw), torch.Generator().manual_seed(1)
    index = torch.arange(n) % len(images)
    return torch.cat([augment(cache.select(index[i:i + 256]), g) for i in range(0, n, 256)]) * STD + MEAN


def differing(a: dict, b: dict, tol: dict) -> list[str]:
    """The statistics where ``a`` and ``b`` differ by more than their tolerance."""
    return [f"{k}: {a[k]:.4f} vs {b[k]:.4f}" for k in a if abs(a[k] - b[k]) > tol[k]]


# ---------------------------------------------------------------------------- statistics
def geometry(x: torch.Tensor) -> dict:
    """Bounding box of a white glyph on black: width, height, left and top edge (pixels)."""
    m = x.mean(1) > 0.5
    cols, rows = m.any(1), m.any(2)
    w, h = cols.sum(1).float(), rows.sum(1).float()
    x0, y0 = cols.float().argmax(1).float(), rows.float().argmax(1).float()
    return {"w_mean": w.mean(), "w_std": w.std(), "h_mean": h.mean(), "h_std": h.std(),
            "x0_mean": x0.mean(), "x0_std": x0.std(), "y0_mean": y0.mean(), "y0_std": y0.std()}


def backgrounds(x: torch.Tensor) -> dict:
    """Kinds of background (solid, gradient along one axis, noise) and their colour statistics."""
    spread = x.std((2, 3)).mean(1)
    solid = spread < 1 / 255
    rows_same = (x - x[:, :, :1, :]).abs().amax((1, 2, 3)) < 1 / 255
    cols_same = (x - x[:, :, :, :1]).abs().amax((1, 2, 3)) < 1 / 255
    gradient = (rows_same ^ cols_same) & ~solid
    return {"solid": solid.float().mean(), "gradient": gradient.float().mean(), "mean": x.mean(), "std": x.std(),
            "noise_spread": spread[~solid & ~gradient].mean(), "colour_std": x.mean((2, 3)).std(0).mean()}


def colour(x: torch.Tensor) -> dict:
    """Per-channel mean and spread; spread over images of brightness, contrast and saturation."""
    lum = x.mean(1)
    sat = (x.max(1).values - x.min(1).values).mean((1, 2))
    out = {f"mean_{c}": x[:, i].mean() for i, c in enumerate("rgb")}
    out |= {f"std_{c}": x[:, i].std() for i, c in enumerate("rgb")}
    return out | {"brightness_std": lum.mean((1, 2)).std(), "contrast_mean": lum.std((1, 2)).mean(),
                  "contrast_std": lum.std((1, 2)).std(), "saturation_mean": sat.mean(), "saturation_std": sat.std()}


def floats(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


# ---------------------------------------------------------------------------- components
def test_glyph_size_and_position_are_drawn_as_on_the_pil_path():
    white = [Image.new("RGBA", (72, 72), (255, 255, 255, 255)), Image.new("RGBA", (72, 48), (255, 255, 255, 255))]
    plain = dict(background=(0, 0, 0), jitter=0)
    pil = floats(geometry(pil_path(white, **plain)))
    tol = {k: 0.25 for k in pil}  # pixels; glyph sides span 22-32 px, positions 0-10 px
    assert not differing(pil, floats(geometry(tensor_path(white, **plain))), tol)
    # without the random scale and position the comparison fails
    assert len(differing(pil, floats(geometry(tensor_path(white, random_position=False, **plain))), tol)) >= 4
    # glyph sides: the same set of values (round(s x 32) for s in 0.7-1)
    m = tensor_path(white[:1], **plain).mean(1) > 0.5
    assert set(m.any(1).sum(1).tolist()) <= set(range(22, 33)) and len(set(m.any(1).sum(1).tolist())) >= 10


def test_backgrounds_are_drawn_as_on_the_pil_path():
    clear = [Image.new("RGBA", (72, 72), (0, 0, 0, 0))]  # nothing placed: the output is the background
    pil = floats(backgrounds(pil_path(clear, jitter=0)))
    tol = {"solid": 0.05, "gradient": 0.05, "mean": 0.015, "std": 0.01, "noise_spread": 0.01, "colour_std": 0.01}
    assert pil["solid"] == pytest.approx(0.5, abs=0.05) and pil["gradient"] == pytest.approx(0.25, abs=0.05)
    assert not differing(pil, floats(backgrounds(tensor_path(clear, jitter=0))), tol)
    assert len(differing(pil, floats(backgrounds(tensor_path(clear, jitter=0, background=(128, 128, 128)))), tol)) >= 4


def test_colour_jitter_matches_torchvision_color_jitter():
    # a glyph filling the canvas (scale 1) on a fixed background: only the jitter is random
    fixed = dict(scale=(1.0, 1.0), background=(90, 120, 150))
    images = glyphs()[:4]
    pil = floats(colour(pil_path(images, **fixed)))
    tol = {k: 0.01 for k in pil} | {"brightness_std": 0.006, "contrast_std": 0.004, "saturation_std": 0.008}
    assert not differing(pil, floats(colour(tensor_path(images, **fixed))), tol)
    assert len(differing(pil, floats(colour(tensor_path(images, jitter=0, **fixed))), tol)) >= 3


def test_opaque_images_get_random_resized_crops_as_on_the_pil_path():
    # a horizontal and a vertical ramp: a crop's extent shows in the values it keeps
    ramp = torch.linspace(0, 255, 64).round().to(torch.uint8)
    arr = torch.stack([ramp.view(1, -1).expand(48, 64), ramp[:48].view(-1, 1).expand(48, 64),
                       torch.full((48, 64), 128, dtype=torch.uint8)], -1)
    images = [Image.fromarray(arr.numpy(), "RGB")]

    def extent(x):
        return floats({"x_lo": x[:, 0].amin((1, 2)).mean(), "x_hi": x[:, 0].amax((1, 2)).mean(),
                       "x_span_std": (x[:, 0].amax((1, 2)) - x[:, 0].amin((1, 2))).std(),
                       "y_lo": x[:, 1].amin((1, 2)).mean(), "y_hi": x[:, 1].amax((1, 2)).mean(),
                       "y_span_std": (x[:, 1].amax((1, 2)) - x[:, 1].amin((1, 2))).std()})

    pil = extent(pil_path(images, jitter=0))
    tol = {k: 0.015 for k in pil}  # roi_align and torchvision's resize differ by under half a source pixel at edges
    assert not differing(pil, extent(tensor_path(images, jitter=0)), tol)
    assert differing(pil, extent(tensor_path(images, jitter=0, scale=(1.0, 1.0))), tol)


# ---------------------------------------------------------------------------- the whole pipeline
def test_the_whole_augmentation_matches_the_pil_path():
    images = glyphs()
    pil = floats(colour(pil_path(images)))
    tol = {k: 0.04 * abs(v) + 0.002 for k, v in pil.items()}  # 4 % (differences seen: under 2 %)
    assert not differing(pil, floats(colour(tensor_path(images))), tol)
    assert differing(pil, floats(colour(tensor_path(images, jitter=0))), tol)


def test_a_batch_is_a_function_of_the_generator_seed():
    cache = ImageCache.from_images(glyphs(), cache_side(SIZE))
    augment = TensorAugment(SIZE)
    index = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    a = augment(cache.select(index), torch.Generator().manual_seed(7))
    b = augment(cache.select(index), torch.Generator().manual_seed(7))
    c = augment(cache.select(index), torch.Generator().manual_seed(8))
    assert a.shape == (8, 3, SIZE, SIZE) and torch.equal(a, b) and not torch.equal(a, c)


def test_the_cache_keeps_small_images_as_they_are_and_fits_large_ones():
    small = Image.new("RGBA", (20, 10), (1, 2, 3, 4))
    large = Image.new("RGB", (100, 50), (9, 8, 7))
    cache = ImageCache.from_images([small, large], 32)
    assert cache.pixels.shape == (2, 4, 32, 32) and cache.pixels.dtype == torch.uint8
    assert cache.sizes.tolist() == [[10, 20], [16, 32]] and cache.source_sizes.tolist() == [[10, 20], [50, 100]]
    assert cache.alpha.tolist() == [True, False]
    assert cache.pixels[0, :, :10, :20].flatten(1).unique(dim=1).tolist() == [[1], [2], [3], [4]]
    assert (cache.pixels[1, 3, :16, :32] == 255).all() and (cache.pixels[1, :, 16:] == 0).all()
