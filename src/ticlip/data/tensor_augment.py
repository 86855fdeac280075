"""The train augmentation of ``transforms.make_train_transform`` as batched tensor operations, on images
decoded once into memory (``ImageCache``; used by ``ticlip.train.memory``).

It draws the same augmentations as the PIL path, per sample:

- images with alpha: glyph side ``max(1, round(s × size))`` with ``s`` uniform in ``scale``, the other
  side by the image's aspect, resized with antialiased bicubic on premultiplied alpha (what PIL's
  ``resize`` of an RGBA image does), placed at a uniformly random integer position on a
  ``RandomBackground`` draw: solid colour (p 0.5), a horizontal or vertical gradient between two random
  colours (p 0.25), or coarse noise of 2–8 cells upscaled bilinearly (p 0.25);
- opaque images: ``RandomResizedCrop(size, scale, ratio=(3/4, 4/3))``'s crop distribution (torchvision's
  ``get_params``, vectorised), cropped and resized by ``torchvision.ops.roi_align`` (bilinear, averaging
  several samples per output pixel, i.e. antialiased);
- ColorJitter's brightness, contrast and saturation factors, uniform in ``[1 - jitter, 1 + jitter]``,
  applied in a random order per sample, with torchvision's formulas; then normalisation.

Every random draw comes from the ``torch.Generator`` passed in, so a batch is a function of the
generator's seed. ``tests/test_tensor_augment.py`` compares statistics of the two paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ticlip.data.transforms import TRAIN_JITTER, TRAIN_SCALE, has_alpha, openai_mean_std

OPAQUE_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range


def cache_side(image_size: int) -> int:
    """Side of the square the image cache keeps each image in: the model's resolution. Glyphs are drawn
    at 0.7–1× of it, so the cache holds what they can show; a larger cache (2×) made the per-batch
    resize of ticlip-tiny-32's batches 2.5× slower (5 ms against 2 ms of a ~250 ms iteration on one
    thread) for a glyph resampled once less."""
    return int(image_size)


@dataclass
class ImageCache:
    """Images decoded once: ``pixels`` (N, 4, side, side) uint8 RGBA, each image's content in the top-left
    ``sizes[i]`` = (height, width) corner (fitted within ``side``, never upscaled); ``source_sizes``: the
    decoded image's (height, width), which sets a glyph's aspect and a crop's geometry; ``alpha``: whether
    the image has an alpha channel (composited on a background) or is opaque (cropped)."""

    pixels: torch.Tensor
    sizes: torch.Tensor
    source_sizes: torch.Tensor
    alpha: torch.Tensor

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.pixels, self.sizes, self.source_sizes, self.alpha))

    def select(self, index: torch.Tensor) -> "ImageCache":
        return ImageCache(self.pixels[index], self.sizes[index], self.source_sizes[index], self.alpha[index])

    @staticmethod
    def concat(parts: Sequence["ImageCache"]) -> "ImageCache":
        return ImageCache(*(torch.cat([getattr(p, f) for p in parts])
                            for f in ("pixels", "sizes", "source_sizes", "alpha")))

    @staticmethod
    def from_images(images, side: int) -> "ImageCache":
        """Decode PIL images into a cache of ``side``-px squares (``cache_side(model image size)``)."""
        import numpy as np
        from PIL import Image

        n = len(images)
        pixels = torch.zeros(n, 4, side, side, dtype=torch.uint8)
        sizes = torch.zeros(n, 2, dtype=torch.int64)
        source = torch.zeros(n, 2, dtype=torch.int64)
        alpha = torch.zeros(n, dtype=torch.bool)
        for i, image in enumerate(images):
            alpha[i] = has_alpha(image)
            image = image.convert("RGBA")
            w, h = image.size
            source[i] = torch.tensor([h, w])
            k = min(1.0, side / max(w, h))
            if k < 1.0:  # PIL resizes RGBA premultiplied, as the train transform's glyph resize does
                filt = Image.Resampling.BICUBIC if alpha[i] else Image.Resampling.BILINEAR
                image = image.resize((max(1, round(w * k)), max(1, round(h * k))), filt)
            arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
            sizes[i] = torch.tensor(arr.shape[1:])
            pixels[i, :, :arr.shape[1], :arr.shape[2]] = arr
        return ImageCache(pixels, sizes, source, alpha)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _randint_below(high: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per element a uniform integer in [0, high) (``high`` >= 1)."""
    return (torch.rand(high.shape, generator=g, dtype=torch.float64) * high).floor().long().clamp_max(high - 1)


class TensorAugment:
    """Batched ``make_train_transform``: ``augment(cache, generator)`` -> (B, 3, size, size) float32,
    normalised. ``background`` is "random" or a fixed RGB colour; ``scale``, ``jitter``, ``mean``,
    ``std`` as in ``make_train_transform``; ``random_position=False`` centres glyphs at ``scale[1]``
    (for tests that switch a component off)."""

    def __init__(self, image_size: int, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 background="random", scale: Sequence[float] = TRAIN_SCALE, jitter: float = TRAIN_JITTER,
                 random_position: bool = True):
        default_mean, default_std = openai_mean_std()
        self.size = int(image_size)
        self.scale = (float(scale[0]), float(scale[1]))
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.background = background if background == "random" else tuple(int(v) for v in background)
        self.jitter = float(jitter)
        self.random_position = random_position
        self.mean = tuple(mean or default_mean)
        self.std = tuple(std or default_std)

    def __repr__(self) -> str:
        return (f"TensorAugment(size={self.size}, scale={self.scale}, background={self.background!r}, "
                f"jitter={self.jitter}, random_position={self.random_position})")

    # ------------------------------------------------------------------ the whole batch
    def __call__(self, cache: ImageCache, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        n, s = len(cache), self.size
        out = torch.empty(n, 3, s, s)
        glyphs = cache.alpha.nonzero().flatten()
        opaque = (~cache.alpha).nonzero().flatten()
        if len(glyphs):
            out[glyphs] = self.place_glyphs(cache.select(glyphs), g)
        if len(opaque):
            out[opaque] = self.crop_opaque(cache.select(opaque), g)
        if self.jitter:
            out = self.color_jitter(out, g)
        return F.normalize(out, list(self.mean), list(self.std))

    # ------------------------------------------------------------------ backgrounds
    def backgrounds(self, n: int, g: torch.Generator) -> torch.Tensor:
        """(n, 3, size, size) in [0, 1], uint8 levels: ``RandomBackground``'s distribution, or the fixed colour."""
        import torch.nn.functional as nnf

        s = self.size
        if self.background != "random":
            fixed = torch.tensor(self.background, dtype=torch.float32) / 255
            return fixed.view(1, 3, 1, 1).expand(n, 3, s, s).clone()
        u = torch.rand(n, generator=g)
        bg = torch.empty(n, 3, s, s)
        solid = u < 0.5
        gradient = (u >= 0.5) & (u < 0.75)
        noise = u >= 0.75
        colour = torch.randint(0, 256, (n, 3), generator=g).float()
        bg[solid] = colour[solid].view(-1, 3, 1, 1).expand(-1, 3, s, s)
        if gradient.any():
            k = int(gradient.sum())
            a = colour[gradient]
            b = torch.randint(0, 256, (k, 3), generator=g).float()
            ramp = torch.linspace(0, 1, s)
            across = torch.rand(k, generator=g) < 0.5  # varies along x (ramp as a row), else along y
            grid = torch.where(across.view(-1, 1, 1), ramp.view(1, 1, s).expand(k, s, s),
                               ramp.view(1, s, 1).expand(k, s, s))
            bg[gradient] = (a.view(-1, 3, 1, 1) + (b - a).view(-1, 3, 1, 1) * grid.unsqueeze(1)).round()
        if noise.any():
            where = noise.nonzero().flatten()
            cells = torch.randint(2, 9, (len(where),), generator=g)
            for c in cells.unique().tolist():
                rows = where[cells == c]
                coarse = torch.randint(0, 256, (len(rows), 3, c, c), generator=g).float()
                # PIL's bilinear upscale samples at pixel centres and clamps at the edges: align_corners=False
                bg[rows] = nnf.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False).round()
        return bg / 255

    # ------------------------------------------------------------------ images with alpha
    def glyph_geometry(self, source_sizes: torch.Tensor, g: torch.Generator):
        """Per sample the glyph's (height, width) and top-left (y, x) on the canvas, as PlaceOnBackground
        draws them."""
        s, (low, high) = self.size, self.scale
        n = source_sizes.shape[0]
        frac = _uniform(n, low, high, g) if self.random_position else torch.full((n,), high, dtype=torch.float64)
        longest = (frac * s).round().clamp_min(1)
        h, w = source_sizes[:, 0].double(), source_sizes[:, 1].double()
        k = longest / torch.maximum(h, w)
        gh = (h * k).round().clamp_min(1).long()
        gw = (w * k).round().clamp_min(1).long()
        if self.random_position:
            y, x = _randint_below(s - gh + 1, g), _randint_below(s - gw + 1, g)
        else:
            y, x = (s - gh) // 2, (s - gw) // 2
        return gh, gw, y, x

    def place_glyphs(self, cache: ImageCache, g: torch.Generator) -> torch.Tensor:
        import torch.nn.functional as nnf

        n, s = len(cache), self.size
        gh, gw, y, x = self.glyph_geometry(cache.source_sizes, g)
        bg = self.backgrounds(n, g)
        # Resize every glyph (premultiplied RGB + alpha) into the top-left corner of an (s + 1)² frame, one
        # interpolate per (cached size, glyph size) group; the frame's last row and column stay transparent.
        frame = torch.zeros(n, 4, s + 1, s + 1)
        groups = torch.stack([cache.sizes[:, 0], cache.sizes[:, 1], gh, gw], 1)
        for key in groups.unique(dim=0).tolist():
            ch, cw, th, tw = key
            rows = (groups == torch.tensor(key)).all(1).nonzero().flatten()
            src = cache.pixels[rows, :, :ch, :cw].float() / 255
            src[:, :3] *= src[:, 3:4]
            if (ch, cw) != (th, tw):
                src = nnf.interpolate(src, size=(th, tw), mode="bicubic", antialias=True, align_corners=False)
                a = src[:, 3:4].clamp(0, 1)  # bicubic overshoots: back into valid premultiplied values
                src = torch.cat([torch.minimum(src[:, :3].clamp_min(0), a), a], 1)
            frame[rows, :, :th, :tw] = src
        # Then each glyph to its position with one gather: canvas pixel (py, px) reads frame pixel
        # (py - y, px - x), or the transparent last row/column where that falls outside the glyph.
        ar = torch.arange(s)
        rows = ar.view(1, s) - y.view(-1, 1)
        cols = ar.view(1, s) - x.view(-1, 1)
        rows = torch.where((rows >= 0) & (rows < gh.view(-1, 1)), rows, s).view(n, s, 1)
        cols = torch.where((cols >= 0) & (cols < gw.view(-1, 1)), cols, s).view(n, 1, s)
        flat = (rows * (s + 1) + cols).view(n, 1, s * s).expand(n, 4, s * s)
        layer = frame.view(n, 4, -1).gather(2, flat).view(n, 4, s, s)
        out = bg * (1 - layer[:, 3:4]) + layer[:, :3]
        return (out * 255).round() / 255  # a uint8 image, as PIL's paste makes

    # ------------------------------------------------------------------ opaque images
    def crop_boxes(self, source_sizes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(n, 4) crop boxes (top, left, height, width) in source pixels: ``RandomResizedCrop.get_params``
        (ten tries of an area fraction in ``scale`` and a log-uniform aspect ratio, else a centre crop)."""
        import math

        n = source_sizes.shape[0]
        H, W = source_sizes[:, 0].double(), source_sizes[:, 1].double()
        area = H * W
        tries = 10
        target = area.view(-1, 1) * (self.scale[0] + (self.scale[1] - self.scale[0])
                                     * torch.rand(n, tries, generator=g, dtype=torch.float64))
        lo, hi = math.log(OPAQUE_RATIO[0]), math.log(OPAQUE_RATIO[1])
        ratio = torch.exp(lo + (hi - lo) * torch.rand(n, tries, generator=g, dtype=torch.float64))
        w = (target * ratio).sqrt().round()
        h = (target / ratio).sqrt().round()
        ok = (w > 0) & (h > 0) & (w <= W.view(-1, 1)) & (h <= H.view(-1, 1))
        first = torch.where(ok.any(1), ok.double().argmax(1), torch.zeros(n, dtype=torch.long))
        cw = w.gather(1, first.view(-1, 1)).flatten()
        ch = h.gather(1, first.view(-1, 1)).flatten()
        # torchvision's fallback: the whole image, its aspect clamped into the ratio range
        in_ratio = W / H
        fw = torch.where(in_ratio > OPAQUE_RATIO[1], (H * OPAQUE_RATIO[1]).round(), W)
        fh = torch.where(in_ratio < OPAQUE_RATIO[0], (W / OPAQUE_RATIO[0]).round(), H)
        found = ok.any(1)
        cw, ch = torch.where(found, cw, fw), torch.where(found, ch, fh)
        top = torch.where(found, _randint_below((H - ch + 1).long(), g).double(), ((H - ch) / 2).floor())
        left = torch.where(found, _randint_below((W - cw + 1).long(), g).double(), ((W - cw) / 2).floor())
        return torch.stack([top, left, ch, cw], 1)

    def crop_opaque(self, cache: ImageCache, g: torch.Generator) -> torch.Tensor:
        from torchvision.ops import roi_align

        n, s = len(cache), self.size
        top, left, ch, cw = self.crop_boxes(cache.source_sizes, g).float().unbind(1)
        k = cache.sizes[:, 0].float() / cache.source_sizes[:, 0].float()  # cache pixels per source pixel
        boxes = torch.stack([torch.arange(n, dtype=torch.float32), left * k, top * k, (left + cw) * k,
                             (top + ch) * k], 1)
        rgb = cache.pixels[:, :3].float() / 255
        out = roi_align(rgb, boxes, output_size=(s, s), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        return (out.clamp(0, 1) * 255).round() / 255

    # ------------------------------------------------------------------ colour
    def color_jitter(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """ColorJitter(brightness, contrast, saturation = jitter) with a factor and an order per sample.
        torchvision's functional ops take one scalar factor per call, so the blends are written here
        with its formulas (``_blend``: ``f·x + (1 - f)·y`` clamped to [0, 1]); its grayscale is used."""
        from torchvision.transforms.v2 import functional as F

        n, j = images.shape[0], self.jitter
        factors = (1 - j + 2 * j * torch.rand(n, 3, generator=g)).clamp_min(0).view(n, 3, 1, 1, 1)
        order = torch.rand(n, 3, generator=g).argsort(1)  # a uniformly random order of the three ops
        x = images
        for pos in range(3):
            for op in range(3):
                rows = (order[:, pos] == op).nonzero().flatten()
                if not len(rows):
                    continue
                f, xi = factors[rows, op], x[rows]
                if op == 0:  # brightness: blend with black
                    other = torch.zeros_like(xi)
                elif op == 1:  # contrast: blend with the mean of the grayscale image
                    other = F.rgb_to_grayscale(xi).mean(dim=(-3, -2, -1), keepdim=True)
                else:  # saturation: blend with the grayscale image
                    other = F.rgb_to_grayscale(xi)
                x[rows] = (f * xi + (1 - f) * other).clamp(0, 1)
        return x


__all__ = ["ImageCache", "TensorAugment", "cache_side"]
