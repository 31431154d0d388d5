"""The Shapes world (v1): procedural scenes, their renders, captions and questions.

A scene is 1-3 objects on a black background, each in its own cell of a 3x3
grid; an object has a shape, a pure saturated colour and a size. Everything a
split needs (image, captions, questions, text-to-image prompt) is a pure
function of the scene spec and a seeded RNG, so the same seed gives the same
bytes. Renders use no antialiasing: every object pixel is exactly its colour,
which lets the pixel-only judge (ShapesEval) read renders back perfectly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
GRID = 3
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
QUESTION_TYPES = ("color", "shape", "count", "existence", "position", "size")
SPLITS = ("train", "val", "test")
CAPTION_TEMPLATES = ("{objects}.", "an image of {objects}.", "a picture with {objects}.")


@dataclass
class WorldConfig:
    """What the world looks like. Defaults were chosen by measurement (docs/WORLD.md)."""

    image_size: int = 96
    min_objects: int = 1
    max_objects: int = 3
    # object extent as a fraction of the cell side, per size
    small_fraction: float = 0.45
    large_fraction: float = 0.85
    # +- pixels of uniform jitter of each object's centre (0 = centred, grid-aligned)
    jitter: int = 0
    caption_order: str = "raster"  # "raster" (cell order) or "random"
    caption_templates: list[str] = field(default_factory=lambda: list(CAPTION_TEMPLATES))
    # colour+shape pairs never shown in train/val scenes; test scenes may hold them
    holdout: list[str] = field(default_factory=lambda: ["cyan triangle", "magenta square"])
    questions_per_image: int = 6

    def __post_init__(self):
        if self.image_size % GRID:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {GRID}")
        if not 1 <= self.min_objects <= self.max_objects <= GRID * GRID:
            raise ValueError("need 1 <= min_objects <= max_objects <= 9")
        if self.caption_order not in ("raster", "random"):
            raise ValueError(f"caption_order must be 'raster' or 'random', got {self.caption_order!r}")
        for pair in self.holdout:
            parts = pair.split()
            if len(parts) != 2 or parts[0] not in COLORS or parts[1] not in SHAPES:
                raise ValueError(f"holdout entry {pair!r} is not '<colour> <shape>'")
        for t in self.caption_templates:
            if "{objects}" not in t:
                raise ValueError(f"caption template {t!r} lacks '{{objects}}'")

    @property
    def cell_size(self) -> int:
        return self.image_size // GRID


@dataclass(frozen=True)
class Object:
    shape: str
    color: str
    size: str
    cell: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.size} {self.color} {self.shape}"

    @property
    def pair(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


@dataclass(frozen=True)
class Scene:
    objects: tuple[Object, ...]
    offsets: tuple[tuple[int, int], ...] = ()  # per-object jitter (dy, dx) in pixels

    def to_dict(self) -> dict:
        objs = [{"shape": o.shape, "color": o.color, "size": o.size, "cell": list(o.cell)} for o in self.objects]
        out: dict = {"objects": objs}
        if any(off != (0, 0) for off in self.offsets):
            out["offsets"] = [list(off) for off in self.offsets]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        objs = tuple(Object(o["shape"], o["color"], o["size"], tuple(o["cell"])) for o in d["objects"])
        offsets = tuple(tuple(off) for off in d.get("offsets", [(0, 0)] * len(objs)))
        return cls(objs, offsets)


def _allowed_pair(rng: np.random.Generator, banned: set[str]) -> tuple[str, str]:
    """A random (colour, shape) that is not a banned pairing."""
    while True:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        if f"{color} {shape}" not in banned:
            return color, shape


def sample_scene(rng: np.random.Generator, config: WorldConfig, split: str) -> Scene:
    """A random scene. Train and val scenes never hold a hold-out colour+shape pair; every test
    scene holds at least one (one object, drawn uniformly, gets a hold-out pair), so the test
    split measures compositional generalisation: known colours and shapes in unseen pairings."""
    banned = set(config.holdout) if split != "test" else set()
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    held_out = int(rng.integers(n)) if split == "test" and config.holdout else -1
    objects = []
    for k, c in enumerate(sorted(int(c) for c in cells)):
        if k == held_out:
            color, shape = config.holdout[int(rng.integers(len(config.holdout)))].split(" ")
        else:
            color, shape = _allowed_pair(rng, banned)
        size = SIZES[int(rng.integers(len(SIZES)))]
        objects.append(Object(shape, color, size, (c // GRID, c % GRID)))
    j = config.jitter
    offsets = tuple((int(rng.integers(-j, j + 1)), int(rng.integers(-j, j + 1))) if j else (0, 0) for _ in objects)
    return Scene(tuple(objects), offsets)


def object_geometry(obj: Object, config: WorldConfig, offset: tuple[int, int] = (0, 0)) -> tuple[float, float, float]:
    """(centre_y, centre_x, half_extent) of ``obj`` in pixels."""
    cs = config.cell_size
    frac = config.large_fraction if obj.size == "large" else config.small_fraction
    cy = obj.cell[0] * cs + cs / 2 + offset[0]
    cx = obj.cell[1] * cs + cs / 2 + offset[1]
    return cy, cx, frac * cs / 2


def shape_mask(shape: str, cy: float, cx: float, half: float, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a filled shape, sampled at pixel centres."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = y - cy, x - cx
    if shape == "circle":
        return dy * dy + dx * dx <= half * half
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "triangle":  # apex up, base at the bottom; width grows linearly with depth
        t = (dy + half) / (2 * half)
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * half)
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, config: WorldConfig) -> np.ndarray:
    """The scene as uint8 [H, W, 3]."""
    size = config.image_size
    image = np.zeros((size, size, 3), dtype=np.uint8)
    offsets = scene.offsets or tuple((0, 0) for _ in scene.objects)
    for obj, off in zip(scene.objects, offsets):
        cy, cx, half = object_geometry(obj, config, off)
        image[shape_mask(obj.shape, cy, cx, half, size)] = COLORS[obj.color]
    return image


def _objects_phrase(objects: list[Object]) -> str:
    parts = [f"a {o.name} in the {o.position}" for o in objects]
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> str:
    """One caption naming every object with size, colour, shape and position."""
    objects = list(scene.objects)
    if config.caption_order == "random":
        objects = [objects[i] for i in rng.permutation(len(objects))]
    template = config.caption_templates[int(rng.integers(len(config.caption_templates)))]
    return template.format(objects=_objects_phrase(objects))


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    qtype: str  # one of QUESTION_TYPES

    @property
    def answer_type(self) -> str:
        """The VQAv2 answer type."""
        if self.qtype == "existence":
            return "yes/no"
        return "number" if self.qtype == "count" else "other"


def _unique(objects, key) -> list[Object]:
    """Objects whose ``key`` value no other object shares (so a question about it has one answer)."""
    values = [key(o) for o in objects]
    return [o for o, v in zip(objects, values) if values.count(v) == 1]


def _ask(qtype: str, scene: Scene, rng: np.random.Generator, config: WorldConfig) -> Question | None:
    objs = list(scene.objects)
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    if qtype == "color":
        cands = _unique(objs, lambda o: o.shape)
        if cands:
            o = pick(cands)
            return Question(f"what color is the {o.shape}?", o.color, qtype)
        o = pick(objs)
        return Question(f"what color is the object in the {o.position}?", o.color, qtype)
    if qtype == "shape":
        cands = _unique(objs, lambda o: o.color)
        if cands and rng.random() < 0.5:
            o = pick(cands)
            return Question(f"what shape is the {o.color} object?", o.shape, qtype)
        o = pick(objs)
        return Question(f"what shape is in the {o.position}?", o.shape, qtype)
    if qtype == "count":
        kind = int(rng.integers(3))
        if kind == 0:
            return Question("how many objects are there?", str(len(objs)), qtype)
        if kind == 1:
            color = pick(list(COLORS))
            n = sum(o.color == color for o in objs)
            return Question(f"how many {color} objects are there?", str(n), qtype)
        shape = pick(list(SHAPES))
        n = sum(o.shape == shape for o in objs)
        return Question(f"how many {shape}s are there?", str(n), qtype)
    if qtype == "existence":
        if rng.random() < 0.5:
            o = pick(objs)
            return Question(f"is there a {o.pair}?", "yes", qtype)
        present = {o.pair for o in objs}
        absent = [f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in present]
        return Question(f"is there a {pick(absent)}?", "no", qtype)
    if qtype == "position":
        cands = _unique(objs, lambda o: o.pair)
        o = pick(cands) if cands else None
        return Question(f"where is the {o.pair}?", o.position, qtype) if o else None
    if qtype == "size":
        o = pick(objs)
        return Question(f"what size is the object in the {o.position}?", o.size, qtype)
    raise ValueError(f"unknown question type {qtype!r}")


def questions(scene: Scene, rng: np.random.Generator, config: WorldConfig) -> list[Question]:
    """Up to ``questions_per_image`` questions with unique answers, cycling through the types."""
    out = []
    order = [QUESTION_TYPES[i] for i in rng.permutation(len(QUESTION_TYPES))]
    for k in range(config.questions_per_image):
        q = _ask(order[k % len(order)], scene, rng, config)
        if q is not None and q not in out:
            out.append(q)
    return out
