"""Predictions files: append-only JSONL shards, their exact merge, and official result formats.

A shard line is ``{"question_id": ..., "prompt": ..., "text": ...}`` (LLaVA's
answer-file fields). Shards are appended and flushed per batch, so a killed run
leaves complete lines plus at most one torn last line, which is dropped on
resume.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

SHARD_GLOB = "predictions.rank*-of-*.jsonl"


def shard_path(out_dir: str | Path, rank: int, world_size: int) -> Path:
    return Path(out_dir) / f"predictions.rank{rank}-of-{world_size}.jsonl"


def repair_tail(path: Path) -> None:
    """Cut a torn last line (a run killed mid-write) so appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def read_shard(path: Path) -> list[dict]:
    """Complete records of one shard; a torn last line is ignored, any other bad line is an error."""
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:  # torn final line without newline: the run was killed
                continue
            raise ValueError(f"{path}:{n + 1}: invalid JSON line") from None
        if "question_id" not in rec or "text" not in rec:
            raise ValueError(f"{path}:{n + 1}: a prediction needs 'question_id' and 'text'")
        records.append(rec)
    return records


def append_records(path: Path, records: Iterable[dict]) -> None:
    with path.open("a") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
        f.flush()


def merge_shards(out_dir: str | Path) -> tuple[dict[str, dict], int]:
    """All shard records keyed by ``str(question_id)``, and the number of conflicts.

    Files are read in sorted name order and the first record of an id wins, so
    the result does not depend on which rank finished first; records of one id
    that disagree (a resumed run with a sampling decoder) are counted."""
    merged: dict[str, dict] = {}
    conflicts = 0
    for path in sorted(Path(out_dir).glob(SHARD_GLOB)):
        for rec in read_shard(path):
            key = str(rec["question_id"])
            if key in merged:
                conflicts += merged[key]["text"] != rec["text"]
                continue
            merged[key] = rec
    return merged, conflicts


def _pairs_from_list(rows: list, path: Path) -> Iterable[tuple[str, str]]:
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: entry {n} is not an object")
        qid = row.get("question_id", row.get("questionId", row.get("image")))
        answer = next((row[k] for k in ("answer", "prediction", "text") if k in row), None)
        if qid is None or answer is None:
            raise ValueError(f"{path}: entry {n} needs question_id (or questionId/image) and answer "
                             "(or prediction/text)")
        yield str(qid), str(answer)


def read_prediction_rows(path: str | Path) -> list[dict] | dict:
    """The parsed content of a predictions file: a JSON list or mapping, or JSONL lines (a list).

    Errors name the file and, for JSONL, the line."""
    from unified_ar.eval.benchmarks.base import read_json, read_jsonl

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    return read_jsonl(path) if path.suffix == ".jsonl" else read_json(path)


def read_predictions(path: str | Path) -> dict[str, str]:
    """Predictions in any official results format, keyed by ``str(question_id)``.

    Accepted: VQAv2/EvalAI ``[{"question_id", "answer"}]``, GQA
    ``[{"questionId", "prediction"}]``, VizWiz ``[{"image", "answer"}]``, a JSON
    mapping id -> answer, or JSONL lines (ours / LLaVA's ``{"question_id", "text"}``).
    A benchmark whose users hold files this cannot key (LLaVA's answer files with
    shared or running ids) defines its own ``read_answers`` (see :func:`read_benchmark_predictions`)."""
    path = Path(path)
    rows = read_prediction_rows(path)
    pairs = [(str(k), str(v)) for k, v in rows.items()] if isinstance(rows, dict) else list(_pairs_from_list(rows, path))
    out: dict[str, str] = {}
    for key, answer in pairs:
        if key in out and out[key] != answer:
            raise ValueError(f"{path}: question {key} has two different answers")
        out[key] = answer
    return out


def read_benchmark_predictions(module, path: str | Path, data_dir: str | Path, options) -> dict[str, str]:
    """A predictions file keyed as benchmark ``module`` keys its questions.

    A benchmark module may define ``read_answers(path, data_dir, options) -> dict[str, str]``
    for the files its users already have; otherwise :func:`read_predictions` reads it."""
    reader = getattr(module, "read_answers", None)
    return reader(Path(path), data_dir, options) if reader is not None else read_predictions(path)
