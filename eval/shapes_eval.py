"""ShapesEval: judge a generated Shapes-world image against its scene spec, from pixels only.

Steps, per image (uint8 [H, W, 3], any size; the 3x3 grid is scaled to it):

1. colour segmentation: a pixel is foreground when its brightest channel reaches
   ``value_threshold``; its chromaticity (RGB divided by the brightest channel)
   is matched to the nearest palette colour (``COLORS`` of the world, also
   divided by their brightest channel) within ``color_tolerance``, so dimmed or
   blurred pixels of a VQ reconstruction keep their hue;
2. 4-connected components per colour; components smaller than
   ``min_area_fraction`` of a cell are noise;
3. per component: centroid -> grid cell, fill ratio of its bounding box ->
   shape (circle pi/4 ~ 0.785, square 1.0, triangle 0.5, nearest wins; a
   component with under 3/8 of its pixels above its box middle is a triangle
   whatever its fill, which keeps blurred small triangles right), area
   divided by that shape's fill ratio -> extent -> size (the threshold sits
   between the world's small and large extents).

Scoring: detected objects are matched one-to-one to the spec's objects
(maximising agreeing attributes); colour / shape / size / position accuracies
are over spec objects (unmatched -> wrong), count accuracy is over images
(as many detections as spec objects), and an image is an exact scene when the
count is right and every object agrees on every attribute.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from unified_ar.train.shapes.world import COLORS, GRID, SHAPES, SIZES, WorldConfig

SHAPE_FILL = {"circle": float(np.pi / 4), "square": 1.0, "triangle": 0.5}
ATTRIBUTES = ("color", "shape", "size", "position")
TRIANGLE_TOP_MASS = 0.375  # fraction of a component above its box middle: triangle 0.25, others 0.5


@dataclass
class JudgeConfig:
    """Thresholds of the pixel judge (defaults read the world's renders exactly)."""

    # brightest channel >= this: foreground; half of full scale keeps a blurred edge where it was
    value_threshold: int = 128
    color_tolerance: float = 0.35  # max chromaticity distance to a palette colour
    min_area_fraction: float = 0.02  # components below this fraction of a cell are noise
    max_detections: int = 9  # largest components kept per image (one per cell at most in a scene)


@dataclass(frozen=True)
class Detection:
    color: str
    shape: str
    size: str
    cell: tuple[int, int]
    area: int
    fill: float


@dataclass
class ShapesEvalResult:
    """Accuracies in [0, 1]; ``per_image``: one dict per image (detections and hits)."""

    color: float
    shape: float
    size: float
    position: float
    count: float
    exact: float
    num_images: int
    num_objects: int
    # the same scores over the prompts with 1, 2, ... objects ({"1": {"color": .., "num_images": ..}})
    by_objects: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("per_image")
        return out


def _palette() -> tuple[list[str], np.ndarray]:
    names = list(COLORS)
    rgb = np.array([COLORS[n] for n in names], dtype=np.float64)
    return names, rgb / rgb.max(axis=1, keepdims=True)


def color_labels(image: np.ndarray, cfg: JudgeConfig) -> np.ndarray:
    """int [H, W]: palette index per pixel, -1 for background or no colour within tolerance."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    pix = image.astype(np.float64)
    value = pix.max(axis=2)
    chroma = pix / np.maximum(value, 1.0)[..., None]
    _, pal = _palette()
    dist = np.linalg.norm(chroma[:, :, None, :] - pal[None, None], axis=-1)  # [H, W, P]
    labels = dist.argmin(axis=2)
    ok = (value >= cfg.value_threshold) & (dist.min(axis=2) <= cfg.color_tolerance)
    return np.where(ok, labels, -1)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean [H, W] mask, as arrays of (y, x) pixel coordinates."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, pixels = deque([(y0, x0)]), []
        while queue:
            y, x = queue.popleft()
            pixels.append((y, x))
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(np.array(pixels))
    return out


def _size_threshold(world: WorldConfig) -> float:
    # extent / cell side separating small from large: midway between the two
    return (world.small_fraction + world.large_fraction) / 2


def describe(pixels: np.ndarray, color: str, height: int, width: int, world: WorldConfig) -> Detection:
    """Shape, size and cell of one component (``pixels``: [n, 2] of (y, x))."""
    ys, xs = pixels[:, 0], pixels[:, 1]
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = len(pixels) / box
    # Blur eats a small triangle's apex, shrinking its box and raising its fill towards a
    # circle's; its mass still sits low (1/4 above the box middle, 1/2 for the symmetric shapes).
    top = float(np.mean(ys + 0.5 < (ys.min() + ys.max() + 1) / 2))
    if top < TRIANGLE_TOP_MASS:
        shape = "triangle"
    else:
        shape = min(SHAPES, key=lambda s: abs(SHAPE_FILL[s] - fill))
    cell_h, cell_w = height / GRID, width / GRID
    cell = (min(int((ys.mean() + 0.5) // cell_h), GRID - 1), min(int((xs.mean() + 0.5) // cell_w), GRID - 1))
    extent = np.sqrt(len(pixels) / SHAPE_FILL[shape]) / np.sqrt(cell_h * cell_w)
    size = SIZES[1] if extent >= _size_threshold(world) else SIZES[0]
    return Detection(color, shape, size, cell, int(len(pixels)), float(fill))


def detect(image: np.ndarray, world: WorldConfig = WorldConfig(), cfg: JudgeConfig = JudgeConfig()) -> list[Detection]:
    """Objects found in ``image`` (uint8 [H, W, 3]), largest first."""
    names, _ = _palette()
    labels = color_labels(image, cfg)
    h, w = labels.shape
    min_area = cfg.min_area_fraction * (h / GRID) * (w / GRID)
    found = []
    for k in np.unique(labels[labels >= 0]):
        for pixels in components(labels == k):
            if len(pixels) >= min_area:
                found.append(describe(pixels, names[int(k)], h, w, world))
    found.sort(key=lambda d: -d.area)
    return found[: cfg.max_detections]


def _agree(spec: dict, det: Detection) -> dict[str, bool]:
    return {"color": spec["color"] == det.color, "shape": spec["shape"] == det.shape,
            "size": spec["size"] == det.size, "position": tuple(spec["cell"]) == det.cell}


def match(spec_objects: list[dict], detections: list[Detection]) -> list[dict[str, bool]]:
    """Per spec object, which attributes its matched detection gets right (all False if unmatched).

    Brute force over one-to-one assignments (at most 3 objects x 9 detections)."""
    n, m = len(spec_objects), len(detections)
    none = {a: False for a in ATTRIBUTES}
    best, best_score = [none] * n, -1
    k = min(n, m)
    for objs in itertools.combinations(range(n), k):
        for dets in itertools.permutations(range(m), k):
            hits = [dict(none) for _ in range(n)]
            for o, d in zip(objs, dets):
                hits[o] = _agree(spec_objects[o], detections[d])
            score = sum(sum(h.values()) for h in hits)
            if score > best_score:
                best, best_score = hits, score
    return best


def judge(image: np.ndarray, spec: dict, world: WorldConfig = WorldConfig(),
          cfg: JudgeConfig = JudgeConfig()) -> dict:
    """Detections and per-object hits for one image against its spec ``{"objects": [...]}``."""
    objects = spec.get("objects")
    if not objects:
        raise ValueError(f"spec has no objects: {spec!r}")
    detections = detect(image, world, cfg)
    hits = match(objects, detections)
    count_ok = len(detections) == len(objects)
    return {"detections": [asdict(d) for d in detections], "hits": hits, "count": count_ok,
            "exact": count_ok and all(all(h.values()) for h in hits)}


def evaluate_images(images: list[np.ndarray], specs: list[dict], world: WorldConfig = WorldConfig(),
                    cfg: JudgeConfig = JudgeConfig()) -> ShapesEvalResult:
    """ShapesEval over aligned lists of images and specs."""
    if len(images) != len(specs) or not specs:
        raise ValueError(f"ShapesEval: {len(images)} images for {len(specs)} specs")
    per_image = [judge(img, spec, world, cfg) for img, spec in zip(images, specs)]
    by_objects = {}
    for n in sorted({len(spec["objects"]) for spec in specs}):
        group = [r for r, spec in zip(per_image, specs) if len(spec["objects"]) == n]
        by_objects[str(n)] = _scores(group)
    return ShapesEvalResult(**_scores(per_image), by_objects=by_objects, per_image=per_image)


def _scores(per_image: list[dict]) -> dict:
    """Attribute accuracies over the objects, count and exact-scene accuracy over the images."""
    hits = [h for r in per_image for h in r["hits"]]
    acc = {a: sum(h[a] for h in hits) / max(len(hits), 1) for a in ATTRIBUTES}
    return {**acc, "count": sum(r["count"] for r in per_image) / len(per_image),
            "exact": sum(r["exact"] for r in per_image) / len(per_image),
            "num_images": len(per_image), "num_objects": len(hits)}
