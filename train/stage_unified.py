"""``unified-ar train --config FILE [--resume] [--section.key VALUE ...]``: train the unified model.

One entry point for every stage of the unified model; the stage is a config
(``configs/train/``):

- ``align``: the projector only, LLM frozen, on comprehension data (LLaVA stage 1);
- ``unified``: LLM + projector on a weighted mixture of generation and comprehension data;
- ``sft``: chat / instruction data, LLM + projector.

The run directory gets the resolved config, ``metrics.jsonl``, checkpoints and an
``export/`` directory that ``UnifiedARModel.from_pretrained`` loads (the next stage's
``init_from``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from unified_ar.config import ConfigError, load_config
from unified_ar.generation_config import GenerationConfig
from unified_ar.modeling import UnifiedConfig
from unified_ar.train.collate import CollateConfig
from unified_ar.train.config import TrainConfig


@dataclass
class SourceConfig:
    kind: Literal["captions", "conversations", "text", "webdataset"]
    path: str  # a file, or a glob of webdataset shards
    weight: float = 1.0
    streaming: bool = False  # read lazily (one source only; no packing, no mixture)


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    image_root: str | None = None  # where relative image paths point; default: each data file's folder
    codes: str | None = None  # `unified-ar pretokenize` output; None: encode images with the model's VQ
    max_bad_fraction: float = 0.01
    epoch_size: int | None = None  # records per epoch of a mixture (default: the sources' total)
    stream_buffer: int = 1000  # shuffle buffer of a streaming source


@dataclass
class StageConfig:
    stage: Literal["align", "unified", "sft"] = "unified"
    run_dir: str = "runs/unified"
    init_from: str | None = None  # a from_pretrained directory (e.g. the previous stage's export/)
    model: UnifiedConfig = field(default_factory=UnifiedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    collate: CollateConfig = field(default_factory=CollateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # the prompt format the stage's data uses and the sampling defaults: the export's
    # generation_config.json (read by eval-vqa, eval-t2i, sample and chat)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def check_stage(config: StageConfig, source: str) -> None:
    """Errors a stage config can have that its field types cannot express."""
    if not config.data.sources:
        raise ConfigError(f"{source}: data.sources is empty")
    if config.stage == "align":
        trainable = config.train.trainable
        if not trainable or any(not p.startswith(("projector", "gen_projector")) for p in trainable):
            raise ConfigError(f"{source}: stage align trains the projector only; set train.trainable to "
                              f"projector prefixes (got {trainable})")
        if config.model.comprehension_features == "tokens":
            raise ConfigError(f"{source}: model.comprehension_features tokens has no projector to align; "
                              "skip the align stage and train the unified stage from scratch")
    streaming = [s for s in config.data.sources if s.streaming]
    if streaming and (len(config.data.sources) > 1 or config.collate.pack):
        raise ConfigError(f"{source}: a streaming source must be the only source, with collate.pack false")
    if config.train.zero_stage == 3 and (config.data.codes is None or any(
            s.kind == "webdataset" for s in config.data.sources)):
        raise ConfigError(f"{source}: ZeRO-3 partitions the VQ, so images cannot be encoded in the data "
                          "pipeline; run `unified-ar pretokenize` and set data.codes")


# with ``init_from``, the saved model's own config is the model config (LLM, VQ, TokLIP, tokenizer and
# the rest); of the ``model`` keys a stage config writes, these must agree with it, and these are the
# stage's own (loss weights: a written one replaces the saved one), these LLM settings apply to the
# saved LLM (how it runs, not what it is); the other written keys (llm, vq, toklip, tokenizer) are not
# used, and a warning names them
INIT_MUST_AGREE = ("image_size", "projector", "comprehension_features", "semantic_gen_input",
                   "image_position_embedding")
STAGE_MODEL_FIELDS = ("text_loss_weight", "image_loss_weight")
INIT_LLM_SETTINGS = ("attn_implementation", "gradient_checkpointing")


def build_model(config: StageConfig, written: dict | None = None, written_generation: dict | None = None):
    """The unified model: ``init_from`` (a saved directory) or a fresh one from ``config.model``.

    ``written``: the ``model`` section as the user wrote it (YAML + ``--model.*`` overrides, a nested
    dict); None counts every field of ``config.model`` as written (a config built in code). With
    ``init_from``, a written :data:`INIT_MUST_AGREE` key that differs from the saved model's is an
    error, not silently dropped; a written :data:`STAGE_MODEL_FIELDS` key replaces the saved value;
    an unwritten key keeps the saved model's (a stage config need not restate the model).
    The ``generation`` section works the same way: ``written_generation`` (the keys the user wrote)
    replace the saved model's; None counts all of ``config.generation`` as written."""
    from unified_ar.config import from_dict, merge, to_dict
    from unified_ar.modeling import UnifiedARModel

    if config.init_from is None:
        model = UnifiedARModel.from_config(config.model)
        model.generation_config = config.generation
        return _with_lora(model, config)
    written = to_dict(config.model) if written is None else written
    llm_written = written.get("llm") if isinstance(written.get("llm"), dict) else {}
    llm_settings = {k: getattr(config.model.llm, k) for k in INIT_LLM_SETTINGS if k in llm_written}
    _warn_unused(config.init_from, written, llm_settings)
    model = UnifiedARModel.from_pretrained(config.init_from, **llm_settings)
    saved = to_dict(model.config)
    # a written sub-key (model.projector.depth) overrides that part of the saved section only
    stated = {name: merge(saved[name], value) if isinstance(value, dict) and isinstance(saved[name], dict)
              else value for name, value in written.items() if name in INIT_MUST_AGREE + STAGE_MODEL_FIELDS}
    stage = from_dict(UnifiedConfig, stated, "model")
    differ = [f"model.{name} = {getattr(stage, name)!r} (init_from has {getattr(model.config, name)!r})"
              for name in INIT_MUST_AGREE if name in stated and getattr(stage, name) != getattr(model.config, name)]
    if differ:
        raise ConfigError(f"init_from {config.init_from}: the stage config differs from the saved model: "
                          + "; ".join(differ) + ". Train from scratch (init_from: null) or drop the change.")
    model.config = replace(model.config, **{name: getattr(stage, name) for name in STAGE_MODEL_FIELDS
                                            if name in stated})
    model.generation_config = (config.generation if written_generation is None else
                               model.generation_config.updated(written_generation, "generation"))
    return _with_lora(model, config)


def _with_lora(model, config: StageConfig):
    """``model`` with ``train.lora``'s adapters on its LLM (train/lora.py), or as it is."""
    if config.train.lora is None:
        return model
    from unified_ar.train.lora import apply_lora

    return apply_lora(model, config.train, base=config.init_from)


def _warn_unused(init_from: str, written: dict, llm_settings: dict) -> None:
    unused = [f"model.{k}" for k in written if k not in INIT_MUST_AGREE + STAGE_MODEL_FIELDS + ("llm",)]
    unused += [f"model.llm.{k}" for k in (written.get("llm") or {}) if k not in llm_settings]
    if unused:
        logging.getLogger(__name__).warning(
            "init_from %s gives the model: %s not used (the saved model's are)", init_from, ", ".join(unused))


def _pixel_encoder(model):
    """An image (PIL or a file path) -> codes int64 [N] under the model's image rule, with the
    model's own VQ (no pretokenized codes)."""
    vq, processor = model.vq, model.processor

    def encode(image):
        pixels = processor.pixels(image)
        return vq.encode(pixels[None].to(model.device))[0].flatten().cpu().numpy()

    return encode


def code_table(config: StageConfig, model):
    """``data.codes``, after checking they were made by the model's VQ under its image rule."""
    from unified_ar.processor import ProcessorMismatch
    from unified_ar.train.data.sources import load_code_table

    try:
        model.processor.check_codes(config.data.codes)
    except ProcessorMismatch as error:
        raise ConfigError(str(error)) from None
    return load_code_table(config.data.codes)


def _image_codes(config: StageConfig, model, file: Path, table):
    from unified_ar.train.data.sources import ImageCodes

    root = Path(config.data.image_root) if config.data.image_root else file.parent
    if table is not None:
        return ImageCodes(root, table=table)
    return ImageCodes(root, encoder=_pixel_encoder(model))


def build_source(spec: SourceConfig, config: StageConfig, model, table=None):
    """One configured source (see :mod:`unified_ar.train.data.sources`); ``table``: the code table."""
    from unified_ar.train.data import sources

    path = Path(spec.path)
    if spec.kind == "captions":
        return sources.CaptionSource(path, _image_codes(config, model, path, table), spec.streaming)
    if spec.kind == "conversations":
        return sources.ConversationSource(path, _image_codes(config, model, path, table), spec.streaming)
    if spec.kind == "text":
        return sources.TextSource(path, spec.streaming)
    return sources.WebDatasetSource(spec.path, encode=_pixel_encoder(model))


def build_data(config: StageConfig, model):
    """The configured sources -> a :class:`~unified_ar.train.loop.Batches` of collated micro-batches."""
    from unified_ar.train.collate import Collator
    from unified_ar.train.data.bad import BadData
    from unified_ar.train.data.mixture import Mixture
    from unified_ar.train.data.sampler import MapBatches, PackedBatches, StreamBatches

    collator = Collator(model.layout, model.tokenizer, model.num_image_tokens, config.collate, config.train.seed)
    bad = BadData(max_fraction=config.data.max_bad_fraction)
    table = code_table(config, model) if config.data.codes is not None else None  # one table for all sources
    built = [build_source(s, config, model, table) for s in config.data.sources]
    rows = config.train.micro_batch_size
    if config.data.sources[0].streaming:
        return StreamBatches(built[0], collator, rows, config.train.seed, config.data.stream_buffer, bad)
    dataset = built[0] if len(built) == 1 else Mixture(
        built, [s.weight for s in config.data.sources], config.train.seed, config.data.epoch_size)
    if config.collate.pack:
        return PackedBatches(dataset, collator, rows, config.train.seed, bad)
    return MapBatches(dataset, collator, rows, config.train.seed, bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unified-ar train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--config", required=True, help="stage YAML (configs/train/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from run_dir's latest checkpoint")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    args, overrides = parser.parse_known_args(argv)
    # Bad-record warnings (unified_ar.train.data) go to the console.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(StageConfig, args.config, overrides)
    check_stage(config, args.config)
    from unified_ar.config import merge, parse_overrides, read_yaml

    # the keys the user wrote (the dataclass cannot tell a written default from an unwritten one)
    written_config = merge(read_yaml(args.config), parse_overrides(overrides))
    written = written_config.get("model") or {}
    from unified_ar.train.data.bad import BadDataError
    from unified_ar.train.loop import TrainingStopped, train

    import torch

    torch.manual_seed(config.train.seed)  # same initial weights on every rank, and run to run
    model = build_model(config, written, written_config.get("generation") or {})
    if config.init_from is not None:
        # the run's config.yaml shows (and checks) the model's shape, loss weights and generation
        # settings it trains with; the parts (llm, vq, toklip, tokenizer) stay as written, so a rerun
        # with init_from null builds that shape from the same sources
        effective = {name: getattr(model.config, name) for name in INIT_MUST_AGREE + STAGE_MODEL_FIELDS}
        config = replace(config, model=replace(config.model, **effective), generation=model.generation_config)
        check_stage(config, args.config)
    data = build_data(config, model)
    try:
        result = train(model, data, config.train, config.run_dir, resume=args.resume, full_config=config)
    except (TrainingStopped, BadDataError, FileExistsError) as error:
        print(f"unified-ar train: {error}", file=sys.stderr)
        return 1
    if result.losses and result.rank == 0:
        print(f"trained {result.steps} steps: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}, "
              f"{result.tokens_per_s:,.0f} tokens/s; run dir {result.run_dir}")
    return 0


def launched_main() -> int:
    """``python -m unified_ar.train.stage_unified`` (torchrun / deepspeed): a config error is one
    line and exit code 2, as under ``unified-ar train``."""
    try:
        return main()
    except ConfigError as error:
        print(f"unified-ar train: config error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(launched_main())
