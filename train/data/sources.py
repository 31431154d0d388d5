"""Training data sources, read through ``datasets``, each an indexable of :class:`Sample`.

- :class:`CaptionSource`: caption pairs, JSONL or parquet rows ``{"image": path, "caption": str}``
  (generation);
- :class:`ConversationSource`: LLaVA JSON, ``[{"id", "image"?, "conversations": [{"from","value"}]}]``
  (comprehension / chat);
- :class:`TextSource`: JSONL or parquet rows ``{"text": str}`` (plain language modelling);
- :class:`WebDatasetSource`: webdataset tar shards, samples of an image (png/jpg/...) plus
  ``json`` (``{"caption": ...}``) or ``txt`` (generation).

Images become VQ codes through :class:`ImageCodes`: a table written once by
``unified-ar pretokenize`` (training then reads codes, not pixels) or, without one,
an encoder applied per image. Every problem with one record (missing or
unreadable image, missing / mistyped field, empty conversation) raises
:class:`BadRecord` naming ``file:row``; the sampler skips and counts it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

from unified_ar.train.data.bad import BadRecord

Kind = Literal["generation", "comprehension", "text"]


@dataclass
class Sample:
    """One training record. ``images``: codes of each image, ``int64 [N]`` each, in order of appearance
    (one for generation; one per ``<image>`` for comprehension; empty until loaded by ``__getitem__``)."""

    kind: Kind
    record: str
    caption: str | None = None
    conversation: list[dict] | None = None
    text: str | None = None
    images: list[np.ndarray] = field(default_factory=list)
    num_images: int = 0


def load_rows(path: str | Path, streaming: bool = False) -> Any:
    """Rows of a JSONL / JSON / parquet / arrow file (or a glob of shards) as a ``datasets`` dataset."""
    import datasets

    path = str(path)
    suffix = path.rsplit(".", 1)[-1].lower()
    builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "arrow": "arrow"}.get(suffix)
    if builder is None:
        raise ValueError(f"{path}: unsupported data file type .{suffix} (jsonl, json, parquet, arrow)")
    if not any(Path(p).is_file() for p in _glob(path)):
        raise FileNotFoundError(f"{path}: no such data file")
    try:
        return datasets.load_dataset(builder, data_files=path, split="train", streaming=streaming)
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as {builder}: {error}") from error


def _glob(path: str) -> list[str]:
    p = Path(path)
    return [str(x) for x in sorted(p.parent.glob(p.name))] if any(c in path for c in "*?[") else [path]


class ImageCodes:
    """Image path -> VQ codes ``int64 [N]``: from a pretokenized table, else ``encoder(path)``.

    ``table`` maps paths relative to ``root`` to codes (see :func:`load_code_table`)."""

    def __init__(self, root: str | Path, table: dict[str, np.ndarray] | None = None,
                 encoder: Callable[[Path], np.ndarray] | None = None):
        if table is None and encoder is None:
            raise ValueError("ImageCodes needs a pretokenized code table or an encoder")
        self.root = Path(root)
        self.table = table
        self.encoder = encoder

    def __call__(self, image: Any, record: str) -> np.ndarray:
        if not isinstance(image, str) or not image:
            raise BadRecord(record, f"image must be a non-empty path string, got {image!r}")
        if self.table is not None:
            if image not in self.table:
                raise BadRecord(record, f"image {image!r} is not in the pretokenized code table")
            return self.table[image]
        path = self.root / image
        if not path.is_file():
            raise BadRecord(record, f"image file {path} not found")
        try:
            return np.asarray(self.encoder(path), dtype=np.int64).reshape(-1)
        except (OSError, ValueError) as error:  # PIL raises these for truncated / non-image files
            raise BadRecord(record, f"image {path} unreadable: {error}") from error


def load_code_table(directory: str | Path) -> dict[str, np.ndarray]:
    """Codes written by ``unified-ar pretokenize``: ``directory/codes-*.parquet`` -> {image: codes [N]}."""
    rows = load_rows(Path(directory) / "codes-*.parquet")
    return {image: np.asarray(codes, dtype=np.int64) for image, codes in zip(rows["image"], rows["codes"])}


def _field(row: dict, key: str, kind: type, record: str) -> Any:
    value = row.get(key)
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise BadRecord(record, f"field {key!r} must be a non-empty {kind.__name__}, got {value!r}")
    return value


class _RowSource(abc.ABC):
    """Rows of one file. ``meta(i)`` is the sample without codes (cheap: for lengths and packing),
    ``source[i]`` the full sample; ``stream(...)`` iterates a ``streaming=True`` source."""

    def __init__(self, path: str | Path, streaming: bool = False):
        self.path = Path(path)
        self.streaming = streaming
        self.rows = load_rows(path, streaming=streaming)

    @abc.abstractmethod
    def make(self, row: dict, record: str, load: bool) -> Sample:
        """The sample of ``row``; ``load`` resolves image codes. Raises :class:`BadRecord`."""

    def __len__(self) -> int:
        if self.streaming:
            raise TypeError(f"{self.path}: a streaming source has no length; use StreamBatches")
        return len(self.rows)

    def meta(self, index: int) -> Sample:
        return self.make(self.rows[index], f"{self.path}:{index}", load=False)

    def __getitem__(self, index: int) -> Sample:
        return self.make(self.rows[index], f"{self.path}:{index}", load=True)

    def stream(self, seed: int, epoch: int, rank: int, world_size: int, buffer_size: int) -> Iterator[Sample]:
        """This rank's share of a streaming source, shuffled with a ``buffer_size`` buffer.

        Yields samples, or :class:`BadRecord` *instances* for records to skip (so the
        caller counts them without the stream being interrupted)."""
        from datasets.distributed import split_dataset_by_node

        rows = split_dataset_by_node(self.rows, rank=rank, world_size=world_size)
        rows = rows.shuffle(seed=seed, buffer_size=buffer_size)
        rows.set_epoch(epoch)
        for i, row in enumerate(rows):
            try:
                yield self.make(row, f"{self.path}:epoch{epoch}:rank{rank}:#{i}", load=True)
            except BadRecord as error:
                yield error


class CaptionSource(_RowSource):
    """Caption pairs for text-to-image; ``codes`` resolves the ``image`` field."""

    def __init__(self, path: str | Path, codes: ImageCodes, streaming: bool = False):
        super().__init__(path, streaming)
        self.codes = codes

    def make(self, row: dict, record: str, load: bool) -> Sample:
        sample = Sample("generation", record, caption=_field(row, "caption", str, record), num_images=1)
        if load:
            sample.images = [self.codes(row.get("image"), record)]
        return sample


class ConversationSource(_RowSource):
    """LLaVA conversations; a record with ``image`` must mark it with ``<image>`` in a human turn."""

    def __init__(self, path: str | Path, codes: ImageCodes | None, streaming: bool = False):
        super().__init__(path, streaming)
        self.codes = codes

    def make(self, row: dict, record: str, load: bool) -> Sample:
        turns = row.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise BadRecord(record, "empty or missing 'conversations'")
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or not turn.get("from"):
                raise BadRecord(record, f"conversation turn {i} is not {{'from', 'value'}}: {turn!r}")
        count = sum(turn["value"].count("<image>") for turn in turns)
        if row.get("image") is not None and count != 1:
            raise BadRecord(record, f"has an image but {count} <image> marks (expected 1)")
        if row.get("image") is None and count:
            raise BadRecord(record, "<image> mark without an 'image' field")
        sample = Sample("comprehension", record, conversation=[dict(t) for t in turns], num_images=count)
        if load and count:
            if self.codes is None:
                raise ValueError(f"{self.path}: records have images but no ImageCodes was given")
            sample.images = [self.codes(row["image"], record)]
        return sample


class TextSource(_RowSource):
    """Plain text for language modelling (loss on every token)."""

    def make(self, row: dict, record: str, load: bool) -> Sample:
        return Sample("text", record, text=_field(row, "text", str, record))


class WebDatasetSource:
    """Webdataset tar shards (a glob) of image + ``json`` / ``txt`` samples, for text-to-image.

    ``encode(pil_image) -> codes`` turns the decoded image into codes (or pretokenize the shards)."""

    IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")

    def __init__(self, shards: str, encode: Callable[[Any], np.ndarray]):
        import datasets

        files = _glob(shards)
        if not files:
            raise FileNotFoundError(f"{shards}: no webdataset shards")
        self.shards = shards
        self.rows = datasets.load_dataset("webdataset", data_files={"train": files}, split="train")
        self.encode = encode

    def __len__(self) -> int:
        return len(self.rows)

    def meta(self, index: int) -> Sample:
        row = self.rows[index]
        record = f"{self.shards}:{row.get('__key__', index)}"
        caption = (row.get("json") or {}).get("caption") if isinstance(row.get("json"), dict) else None
        caption = caption if caption is not None else row.get("txt")
        if not isinstance(caption, str) or not caption.strip():
            raise BadRecord(record, "no caption in json['caption'] or txt")
        return Sample("generation", record, caption=caption, num_images=1)

    def __getitem__(self, index: int) -> Sample:
        sample = self.meta(index)
        row = self.rows[index]
        image = next((row[k] for k in self.IMAGE_KEYS if row.get(k) is not None), None)
        if image is None:
            raise BadRecord(sample.record, f"no image ({'/'.join(self.IMAGE_KEYS)}) in the sample")
        sample.images = [np.asarray(self.encode(image), dtype=np.int64).reshape(-1)]
        return sample
