"""What every benchmark shares: the sample type, prompt settings, file helpers, the registry.

A benchmark module ``unified_ar.eval.benchmarks.<name>`` exposes
``load(data_dir, options) -> list[VQASample]`` and
``score(predictions, data_dir, options) -> dict``; ``predictions`` maps
``str(question_id)`` to the model's raw answer text.
"""
from __future__ import annotations

import base64
import importlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Literal

from PIL import Image

# LLaVA-1.5's prompt texts: the defaults of a model's generation config, their one owner
from unified_ar.generation_config import MULTIPLE_CHOICE, SHORT_ANSWER, UNANSWERABLE  # noqa: F401

BENCHMARKS: tuple[str, ...] = (
    "vqav2", "gqa", "textvqa", "vizwiz", "pope", "mme", "mmbench", "scienceqa", "seedbench", "mmmu",
)

OPTION_LETTERS = "ABCDEFGHIJ"


@dataclass
class BenchmarkOptions:
    """Prompt and file options shared by the loaders (defaults: LLaVA-1.5's eval prompts)."""

    short_answer_suffix: str = SHORT_ANSWER
    multiple_choice_suffix: str = MULTIPLE_CHOICE
    unanswerable_prefix: str = UNANSWERABLE
    # split name in the official file names (None: the benchmark's usual evaluation split)
    split: str | None = None
    # folder of the images (None: the benchmark's usual place under data_dir)
    image_dir: str | None = None
    answer_processing: Literal["llava", "none", "lmms"] = "llava"
    # MMBench: evaluate every circular rotation of the options
    circular: bool = True

    def __post_init__(self):
        if self.answer_processing not in ("llava", "none", "lmms"):
            raise ValueError(f"answer_processing must be llava, none or lmms, got {self.answer_processing!r}")


@dataclass
class VQASample:
    """One question to ask the model.

    ``image`` is a file path, a zero-argument callable returning a PIL image
    (base64 TSV rows), a list of those (several images, one per ``<image>`` marker of
    ``prompt``, in order: MMMU), or ``None`` for text-only questions."""

    question_id: str | int
    image: str | Callable[[], Image.Image] | list[str | Callable[[], Image.Image]] | None
    prompt: str
    question: str = ""
    answer: str | None = None
    category: str | None = None
    choices: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The id as a string: predictions files mix ints and strings."""
        return str(self.question_id)

    def load_image(self) -> Image.Image | None:
        """The question's picture as stored (any mode): the model's processor applies the image rule.

        A list of one image gives that image; a question with several images needs :meth:`load_images`."""
        if isinstance(self.image, list):
            if len(self.image) > 1:
                raise ValueError(f"question {self.question_id} has {len(self.image)} images: use load_images()")
            return self._open(self.image[0]) if self.image else None
        return None if self.image is None else self._open(self.image)

    def load_images(self) -> list[Image.Image]:
        """Every picture of the question, in ``<image>`` marker order ([] for text-only questions)."""
        if self.image is None:
            return []
        return [self._open(item) for item in (self.image if isinstance(self.image, list) else [self.image])]

    def _open(self, item: str | Callable[[], Image.Image]) -> Image.Image:
        from unified_ar.tokenizer.transforms import open_image

        if callable(item):
            return item()
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"question {self.question_id}: image {path} not found")
        return open_image(path)


def get_benchmark(name: str):
    """The module of benchmark ``name``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    return importlib.import_module(f"unified_ar.eval.benchmarks.{name}")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON line ({e})") from None
    return rows


def find_file(data_dir: str | Path, candidates: list[str], what: str) -> Path:
    """The first existing ``data_dir/candidate``; the error lists every path tried."""
    root = Path(data_dir)
    for rel in candidates:
        if (root / rel).is_file():
            return root / rel
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"{what}: none of these files exists: {tried}")


def require(row: dict, key: str, where: str) -> Any:
    if key not in row:
        raise KeyError(f"{where}: missing key {key!r}")
    return row[key]


def base64_image(data: str) -> Callable[[], Image.Image]:
    """A loader for a base64-encoded image (decoded only when asked for)."""
    def load() -> Image.Image:
        return Image.open(io.BytesIO(base64.b64decode(data)))
    return load


def options_block(options: list[str]) -> str:
    """``A. first\\nB. second`` as LLaVA's multiple-choice prompts list them."""
    return "\n".join(f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(options))


def with_suffix(text: str, suffix: str) -> str:
    return f"{text}\n{suffix}" if suffix else text


def restrict(items: list, key: Callable[[Any], str], only: Collection[str] | None) -> list:
    """``items`` whose key is in ``only`` (all of them when ``only`` is None)."""
    if only is None:
        return list(items)
    keep = set(only)
    return [item for item in items if key(item) in keep]


def missing_predictions(expected: list[str], predictions: dict[str, str], name: str) -> None:
    """Official scorers refuse incomplete result files; so do we, naming a few ids."""
    missing = [k for k in expected if k not in predictions]
    if missing:
        head = ", ".join(missing[:5])
        raise ValueError(f"{name}: {len(missing)} of {len(expected)} questions have no prediction (e.g. {head})")
