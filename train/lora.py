"""LoRA fine-tuning of the unified model's LLM with PEFT (``train.lora``, :class:`LoRAConfig`).

:func:`apply_lora` adds low-rank adapters to the LLM's linear layers in place (``model.llm`` stays
the transformers model, its frozen base weights under ``...base_layer.weight``) and, with
``new_rows``, PEFT's trainable tokens for the vocabulary rows the base LLM's tokenizer did not
have (the image specials and the image codes), in the input embeddings and in the output head:
those rows are new vocabulary, so adapters alone cannot learn to draw. The LLM's base weights
stay frozen; the other parts train as ``train.trainable`` / ``train.frozen`` say (the projectors
and the grid embedding by default).

``save_pretrained`` of an adapted model writes (``lora.save``):

- ``merged``: the adapters (and trained rows) merged into the LLM, ``llm.safetensors`` as a plain
  model writes it: a normal folder, loaded without peft;
- ``adapter``: no ``llm.safetensors``; ``llm_adapter/`` (PEFT's own format: ``adapter_config.json``
  + ``adapter_model.safetensors``) and ``lora_base.json`` (the base folder, ``init_from``, and the
  SHA-256 of its ``llm.safetensors``). ``UnifiedARModel.from_pretrained`` sees ``lora_base.json``,
  loads the base LLM, applies and merges the adapter (needs peft).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from unified_ar.config import ConfigError
from unified_ar.train.config import LoRAConfig, TrainConfig

LORA_BASE = "lora_base.json"
ADAPTER_DIR = "llm_adapter"
ADAPTER_NAME = "default"
LLM_FILE = "llm.safetensors"
_MISSING = "peft is not installed: pip install -e '.[lora]'"


def _peft():
    try:
        import peft
    except ImportError:
        raise ImportError(f"LoRA needs the peft package, which {_MISSING}") from None
    return peft


def _module_name(root: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in root.named_modules() if m is module)


def new_row_indices(model) -> list[int]:
    """Ids the base LLM's tokenizer did not have: the image specials it lacked and the codes."""
    layout = model.layout
    first = layout.base_vocab_size if layout.base_vocab_size is not None else layout.code_offset
    return list(range(min(first, layout.code_offset), layout.vocab_size))


def peft_config(model, config: LoRAConfig):
    """The PEFT ``LoraConfig`` for ``model``'s LLM."""
    peft = _peft()
    tokens = None
    if config.new_rows:
        rows = new_row_indices(model)
        llm = model.llm
        embed, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        tokens = {_module_name(llm, embed): rows}
        if head is not None and head.weight is not embed.weight:  # a tied head shares the embedding's rows
            tokens[_module_name(llm, head)] = rows
    return peft.LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                           target_modules=list(config.target_modules), trainable_token_indices=tokens,
                           bias="none")


class LoRAAdapter:
    """What an adapted model keeps about its adapters (``model.lora_adapter``; not a module, so its
    PEFT wrapper is not a second path to the LLM's parameters)."""

    def __init__(self, peft_model, config: LoRAConfig, base: Path | None):
        self.peft_model = peft_model
        self.config = config
        self.base = base

    @property
    def llm(self) -> nn.Module:
        return self.peft_model.base_model.model

    def save_llm(self, directory: Path) -> None:
        """Write the LLM part of a model folder as ``config.save`` says (module docstring)."""
        directory = Path(directory)
        if self.config.save == "merged":
            from safetensors.torch import save_file

            for stale in (directory / LORA_BASE, directory / ADAPTER_DIR):
                _remove(stale)
            save_file(merged_llm_state(self.llm), str(directory / LLM_FILE))
            return
        _remove(directory / LLM_FILE)
        self.save_adapter(directory / ADAPTER_DIR)
        base_file = self.base / LLM_FILE
        record = {"base": str(self.base), "llm_sha256": file_sha256(base_file)}
        (directory / LORA_BASE).write_text(json.dumps(record, indent=2) + "\n")

    def save_adapter(self, directory: Path) -> None:
        """PEFT's adapter folder (``PeftModel.from_pretrained(llm, directory)`` loads it too)."""
        from safetensors.torch import save_file

        peft = _peft()
        directory.mkdir(parents=True, exist_ok=True)
        self.peft_model.peft_config[ADAPTER_NAME].save_pretrained(str(directory))
        state = peft.get_peft_model_state_dict(self.peft_model, adapter_name=ADAPTER_NAME,
                                               save_embedding_layers=False)
        save_file({k: v.detach().contiguous() for k, v in state.items()},
                  str(directory / "adapter_model.safetensors"))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def file_sha256(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; the LoRA base folder must hold the LLM's own weights")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def apply_lora(model, train: TrainConfig, base: str | None = None):
    """Add ``train.lora``'s adapters to ``model.llm`` in place; return ``model``.

    ``base``: the folder the model was loaded from (``init_from``), which ``save: adapter``
    refers to. Raises :class:`ConfigError` for a combination that cannot work."""
    config = train.lora
    if model.lora_adapter is not None:
        raise ValueError("apply_lora: the model already has LoRA adapters")
    base_path = _check_base(config, base)
    try:
        peft = _peft()
    except ImportError:
        raise ConfigError(f"train.lora: {_MISSING}") from None
    lora = peft_config(model, config)
    try:
        peft_model = peft.get_peft_model(model.llm, lora, adapter_name=ADAPTER_NAME)
    except ValueError as error:  # e.g. target modules that match nothing
        raise ConfigError(f"train.lora: {error}".replace("\n", " ")) from None
    model.lora_adapter = LoRAAdapter(peft_model, config, base_path)
    _check_trainable(model, train)
    return model


def _check_base(config: LoRAConfig, base: str | None) -> Path | None:
    if config.save != "adapter":
        return Path(base).resolve() if base is not None else None
    if base is None:
        raise ConfigError("train.lora.save adapter: the adapter refers to its base, the init_from folder; "
                          "set init_from (or use save: merged)")
    path = Path(base).resolve()
    if not (path / LLM_FILE).is_file():
        raise ConfigError(f"train.lora.save adapter: init_from {base} has no {LLM_FILE} (an adapter folder "
                          "itself?); the base must hold the LLM's own weights: use save: merged")
    return path


def adapter_parameter_names(model) -> list[str]:
    """Names (in ``model``) of the adapters' parameters: LoRA matrices and trainable-token rows."""
    return [name for name, _ in model.named_parameters() if "lora_" in name or "trainable_tokens_delta" in name]


def _check_trainable(model, train: TrainConfig) -> None:
    names = adapter_parameter_names(model)
    kept = [n for n in names if (not train.trainable or any(n.startswith(p) for p in train.trainable))
            and not any(n.startswith(p) for p in train.frozen)]
    if not kept:
        raise ConfigError(f"train.lora: train.trainable {train.trainable} / train.frozen {train.frozen} leave "
                          "every adapter frozen; add 'llm' to train.trainable (the LLM's base weights stay "
                          "frozen either way)")


def merged_llm_state(llm: nn.Module) -> dict[str, torch.Tensor]:
    """The adapted LLM's state dict with the adapters merged, under the plain model's names (what
    ``safetensors.save_model`` writes for the un-adapted LLM); the LLM itself is not changed."""
    peft = _peft()
    from peft.utils.other import TrainableTokensWrapper

    merged = {}
    for name, module in llm.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            base = module.get_base_layer()
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            merged[f"{name}.weight"] = base.weight + delta.to(base.weight.dtype)
        elif isinstance(module, TrainableTokensWrapper):
            merged[f"{name}.weight"] = module.token_adapter.get_merged_weights(module.token_adapter.active_adapters)
    state = {}
    for key, tensor in llm.state_dict().items():
        if "lora_" in key or "trainable_tokens_" in key:
            continue
        plain = key.replace(".token_adapter.base_layer.", ".").replace(".base_layer.", ".")
        state[plain] = merged.get(plain, tensor)
    embed, head = llm.get_input_embeddings(), llm.get_output_embeddings()
    if head is not None and _base_weight(head) is _base_weight(embed):
        # tied: the one matrix, under the embedding's name (as save_model keeps it)
        state.pop(f"{_module_name(llm, head)}.weight", None)
    return {k: v.detach().contiguous() for k, v in state.items()}


def _base_weight(module: nn.Module) -> torch.Tensor:
    while hasattr(module, "get_base_layer") or hasattr(module, "token_adapter"):
        module = module.token_adapter.base_layer if hasattr(module, "token_adapter") else module.get_base_layer()
    return module.weight


def is_adapter_folder(directory: Path) -> bool:
    return (Path(directory) / LORA_BASE).is_file()


def load_adapter_llm(model, directory: Path, device) -> None:
    """The LLM of an adapter folder: its base's weights, then its adapter, merged (needs peft)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    record_path = directory / LORA_BASE
    record = json.loads(record_path.read_text())
    base_file = Path(record["base"]) / LLM_FILE
    if not base_file.is_file():
        raise FileNotFoundError(f"{record_path}: its base {base_file} is missing (moved?); put the base "
                                f"folder back there or edit 'base' in {record_path}")
    if file_sha256(base_file) != record["llm_sha256"]:
        raise ValueError(f"{record_path}: {base_file} is not the LLM the adapter was trained on (SHA-256 "
                         f"differs from {record['llm_sha256']})")
    model._load_part("llm", model.llm, base_file, device)
    peft = _peft()
    adapter_dir = directory / ADAPTER_DIR
    lora = peft.LoraConfig.from_pretrained(str(adapter_dir))
    peft_model = peft.get_peft_model(model.llm, lora, adapter_name=ADAPTER_NAME)
    state = load_file(str(adapter_dir / "adapter_model.safetensors"), device=str(device))
    result = peft.set_peft_model_state_dict(peft_model, state, adapter_name=ADAPTER_NAME)
    expected = {n for n, _ in peft_model.named_parameters() if "lora_" in n or "trainable_tokens_delta" in n}
    missing = [k for k in result.missing_keys if k in expected]
    if missing or result.unexpected_keys:
        raise KeyError(f"{adapter_dir}: adapter does not match the model: missing {missing[:5]}, "
                       f"unexpected {list(result.unexpected_keys)[:5]}")
    peft_model.merge_and_unload()  # in place: model.llm holds plain modules again
