"""Image transforms applied when a stream is read: augmentation for training, a fixed transform
for evaluation. Both take PIL images with or without alpha and return normalised tensors.

Images with transparency (emoji glyphs) are composited onto a background here, not at build time,
so every epoch sees the glyph at a new scale and position on a new background; opaque images go
through torchvision's RandomResizedCrop. No flips and no hue jitter: captions name directions
("facing right", "right arrow") and colours ("green heart", skin tones) that those would falsify.

Every transform is a plain object (no lambdas or closures), so DataLoader workers can pickle it;
random draws use torch's generator, which DataLoader seeds per worker.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torchvision import transforms as T

RGB = tuple[int, int, int]
TRAIN_SCALE = (0.7, 1.0)  # make_train_transform's glyph scale / crop area range (ticlip.data.tensor_augment too)
TRAIN_JITTER = 0.2  # and its brightness/contrast/saturation jitter


def openai_mean_std() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)


def model_mean_std(model) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation an open_clip model was configured with (its ``visual.preprocess_cfg``)."""
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    mean, std = openai_mean_std()
    return tuple(cfg.get("mean", mean)), tuple(cfg.get("std", std))


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def _rand_colour() -> RGB:
    return tuple(int(v) for v in torch.randint(0, 256, (3,)))


class RandomBackground:
    """Draws a background of a given size: a solid random colour, a linear gradient between two
    random colours, or smooth coloured noise, with probabilities ``p_solid``, ``p_gradient`` and
    the remainder."""

    def __init__(self, p_solid: float = 0.5, p_gradient: float = 0.25):
        self.p_solid, self.p_gradient = p_solid, p_gradient

    def __call__(self, size: int) -> Image.Image:
        u = float(torch.rand(()))
        if u < self.p_solid:
            return Image.new("RGB", (size, size), _rand_colour())
        if u < self.p_solid + self.p_gradient:
            a, b = (torch.tensor(_rand_colour(), dtype=torch.float32) for _ in range(2))
            ramp = torch.linspace(0, 1, size)
            grid = ramp.view(1, -1) if float(torch.rand(())) < 0.5 else ramp.view(-1, 1)
            img = a.view(3, 1, 1) + (b - a).view(3, 1, 1) * grid.expand(size, size)
            return T.functional.to_pil_image(img.round().to(torch.uint8))
        cells = int(torch.randint(2, 9, ()))  # coarse noise upscaled: blotches, not pixel static
        noise = torch.randint(0, 256, (3, cells, cells), dtype=torch.uint8)
        return T.functional.to_pil_image(noise).resize((size, size), Image.Resampling.BILINEAR)

    def __repr__(self) -> str:
        return f"RandomBackground(p_solid={self.p_solid}, p_gradient={self.p_gradient})"


class PlaceOnBackground:
    """Composite an image onto a square ``size`` canvas.

    Images with alpha: the image (scaled so its longer side is ``s × size``, ``s`` drawn uniformly
    from ``scale``) goes to a uniformly random position on the background (``"random"``: a
    :class:`RandomBackground`; or a fixed RGB colour), or centred when ``random_position`` is off.
    Opaque images: ``RandomResizedCrop(size, scale)`` when ``random_position``, else resize and
    centre-crop, as open_clip's eval transform does.
    """

    def __init__(self, size: int, *, scale: Sequence[float] = (0.7, 1.0), background="random",
                 random_position: bool = True):
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.background = background if background == "random" else tuple(int(v) for v in background)
        self.random_position = random_position
        self._random_bg = RandomBackground()
        if random_position:
            self._opaque = T.RandomResizedCrop(self.size, scale=self.scale, antialias=True)
        else:
            self._opaque = T.Compose([T.Resize(self.size, antialias=True), T.CenterCrop(self.size)])

    def _canvas(self) -> Image.Image:
        if self.background == "random":
            return self._random_bg(self.size)
        return Image.new("RGB", (self.size, self.size), self.background)

    def __call__(self, image: Image.Image) -> Image.Image:
        if not has_alpha(image):
            return self._opaque(image.convert("RGB"))
        image = image.convert("RGBA")
        low, high = self.scale
        s = low + (high - low) * float(torch.rand(())) if self.random_position else high
        longest = max(1, round(s * self.size))
        w, h = image.size
        k = longest / max(w, h)
        glyph = image.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BICUBIC)
        free_x, free_y = self.size - glyph.width, self.size - glyph.height
        if self.random_position:
            x, y = int(torch.randint(0, free_x + 1, ())), int(torch.randint(0, free_y + 1, ()))
        else:
            x, y = free_x // 2, free_y // 2
        canvas = self._canvas()
        canvas.paste(glyph, (x, y), glyph)
        return canvas

    def __repr__(self) -> str:
        return (f"PlaceOnBackground(size={self.size}, scale={self.scale}, background={self.background!r}, "
                f"random_position={self.random_position})")


def _normalise(mean, std):
    if mean is None or std is None:
        default_mean, default_std = openai_mean_std()
        mean, std = mean or default_mean, std or default_std
    return T.Normalize(mean=tuple(mean), std=tuple(std))


def make_train_transform(
    image_size: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    background="random",
    scale: Sequence[float] = TRAIN_SCALE,
    jitter: float = TRAIN_JITTER,
) -> T.Compose:
    """PIL image -> normalised (3, image_size, image_size) tensor, randomly augmented.

    Random placement on a random background for images with alpha (RandomResizedCrop for opaque
    ones, with the same ``scale``), then brightness/contrast/saturation jitter of ±``jitter`` (no hue
    jitter; see the module docstring). ``mean``/``std`` default to OpenAI CLIP's; pass
    ``model_mean_std(model)`` for a model configured otherwise.

    ``scale`` defaults to 0.7–1.0: at 32 px with 8-px patches a half-size glyph spans two patches,
    and on the emoji stream (benchmarks/check_emoji_learnable.py, step 2015, ticlip-tiny-32, 150
    iterations) 0.5–1.0 gave held-out mean R@1 0.095 against 0.114 for 0.7–1.0 (one seed each).
    """
    steps: list = [PlaceOnBackground(image_size, scale=scale, background=background, random_position=True)]
    if jitter:
        steps.append(T.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    steps += [T.ToTensor(), _normalise(mean, std)]
    return T.Compose(steps)


def make_eval_transform(
    image_size: int,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    background: Sequence[int] = (255, 255, 255),
    scale: float = 0.85,
) -> T.Compose:
    """PIL image -> normalised tensor, deterministically: images with alpha centred at ``scale`` of
    the side (the middle of the train transform's default range) on a fixed background; opaque
    images resized and centre-cropped."""
    place = PlaceOnBackground(image_size, scale=(scale, scale), background=background, random_position=False)
    return T.Compose([place, T.ToTensor(), _normalise(mean, std)])


def composite(image: Image.Image, background: Sequence[int] = (255, 255, 255)) -> Image.Image:
    """An RGB copy of ``image``, transparent parts filled with ``background`` (for display)."""
    if not has_alpha(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, tuple(background))
    canvas.paste(rgba, (0, 0), rgba)
    return canvas


__all__ = [
    "PlaceOnBackground",
    "RandomBackground",
    "TRAIN_JITTER",
    "TRAIN_SCALE",
    "composite",
    "has_alpha",
    "make_eval_transform",
    "make_train_transform",
    "model_mean_std",
    "openai_mean_std",
]
