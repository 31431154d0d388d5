"""How a model wants to be prompted and sampled: ``generation_config.json`` in its folder.

A model learns one prompt format: a model trained on LLaVA's data answers short questions
that end in "Answer the question using a single word or phrase.", a model trained on the
Shapes world's conversations answers the bare question. The format it was trained with,
and the sampling settings chosen for it, travel with the model: training writes the stage
config's ``generation`` section into the export, and ``eval-vqa``, ``eval-t2i``,
``sample`` and ``chat`` read it; a command-line flag overrides a value for one run.

A folder without the file (written before the file existed, or assembled by hand) gets
the defaults below; an unknown key or a wrong type is an error naming the file and key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

GENERATION_CONFIG = "generation_config.json"

# LLaVA-1.5's evaluation prompts: what a model trained on LLaVA's data expects.
SHORT_ANSWER = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE = "Answer with the option's letter from the given choices directly."
UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
# The one default guidance scale (classifier-free guidance of text-to-image) for models whose
# folder does not set one; ``image.guidance_scale: null`` means no CFG.
DEFAULT_GUIDANCE_SCALE = 3.0
MODEL_DEFAULT = "default: the model folder's generation_config.json"


@dataclass
class PromptFormat:
    """Text added to benchmark questions (empty string: none)."""

    short_answer_suffix: str = SHORT_ANSWER
    multiple_choice_suffix: str = MULTIPLE_CHOICE
    unanswerable_prefix: str = UNANSWERABLE


@dataclass
class TextSettings:
    """Text generation (``chat``; ``eval-vqa`` answers greedily with ``answer_max_new_tokens``)."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    answer_max_new_tokens: int = 16  # benchmark answers (greedy, as LLaVA evaluates)


@dataclass
class ImageSettings:
    """Text-to-image sampling (``sample``, ``eval-t2i``, ``chat``'s ``/draw``)."""

    guidance_scale: float | None = DEFAULT_GUIDANCE_SCALE  # None: no CFG
    guidance_schedule: Literal["constant", "linear", "cosine"] = "constant"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0


@dataclass
class GenerationConfig:
    prompts: PromptFormat = field(default_factory=PromptFormat)
    text: TextSettings = field(default_factory=TextSettings)
    image: ImageSettings = field(default_factory=ImageSettings)

    def save(self, directory: str | Path) -> Path:
        from unified_ar.config import to_dict

        path = Path(directory) / GENERATION_CONFIG
        path.write_text(json.dumps(to_dict(self), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict, source: str) -> "GenerationConfig":
        from unified_ar.config import from_dict

        return from_dict(cls, data, source)

    @classmethod
    def load(cls, directory: str | Path) -> "GenerationConfig":
        """``directory/generation_config.json``, or the defaults when the folder has none."""
        path = Path(directory) / GENERATION_CONFIG
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        return cls.from_dict(data, str(path))

    def updated(self, written: dict[str, Any], source: str) -> "GenerationConfig":
        """This config with the keys of ``written`` (a nested mapping, e.g. a stage config's
        ``generation`` section as the user wrote it) replaced."""
        from unified_ar.config import merge, to_dict

        return self.from_dict(merge(to_dict(self), written), source)



def flags_given(**flags: Any) -> dict[str, Any]:
    """The command-line flags a user gave (a flag left at its ``None`` default is not given)."""
    return {k: v for k, v in flags.items() if v is not None}
