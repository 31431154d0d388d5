"""The one training engine: ``build_engine(model, train_config)`` wraps any model in DeepSpeed.

This is the only module in the project that imports deepspeed. A model trains
through it when ``model(batch: dict)`` returns an object with a scalar ``.loss``
(and optionally ``.metrics: dict[str, float | Tensor]``, ``.text_loss``, ``.image_loss``).

The DeepSpeed JSON is generated from :class:`TrainConfig` by :func:`deepspeed_config`.
Without a launcher (plain ``python``), :func:`init_distributed` starts a one-rank
gloo group on a free localhost port; under ``deepspeed`` or ``torchrun`` it uses
the launcher's environment.

Per-step overhead matters on a 2-core CPU (optimiser steps per second decide
what the demo learns), so at ZeRO-0 in fp32 the engine clips with torch's
``clip_grad_norm_`` itself (DeepSpeed's clipping there is slower and does not
report the norm), and on one rank it skips DeepSpeed's gradient all-reduce,
which would copy every gradient into a flat buffer and back for nothing.
"""
from __future__ import annotations

import math
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from unified_ar.config import ConfigError

from unified_ar.train.config import TrainConfig


def _deepspeed() -> Any:
    """Import deepspeed on first use, so that importing this module has no side effects.

    Without a GPU, ``DS_ACCELERATOR=cpu`` must be set before the import, or
    DeepSpeed probes for CUDA and warns."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    return deepspeed

_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> tuple[int, int]:
    """Initialise torch.distributed once; return ``(rank, world_size)``.

    Under a launcher the environment names the group; without one, a one-rank
    gloo group is started on a free localhost port (the environment variables
    DeepSpeed expects are set for this process only)."""
    if not torch.distributed.is_initialized():
        if not all(name in os.environ for name in _LAUNCHER_ENV):
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                              MASTER_PORT=str(_free_port()))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        _deepspeed().init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def use_bf16(config: TrainConfig, cuda: bool | None = None) -> bool:
    """bf16 on GPU and fp32 on CPU unless the config says otherwise."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if config.precision == "auto":
        return cuda
    return config.precision == "bf16"


# torch AdamW's fused kernel, on GPU and on CPU (torch >= 2.4): one kernel per parameter, where
# `foreach` on a CPU runs a loop of per-tensor ops (`python -m unified_ar.eval.bench_train
# --optimizers` times both, docs/TRAINING.md).
ADAMW_KERNEL: dict[str, bool] = {"fused": True}


def deepspeed_config(config: TrainConfig, cuda: bool | None = None) -> dict:
    """The DeepSpeed JSON for ``config`` (what ``configs/deepspeed/*.json`` show).

    ``cuda`` (default: whether a GPU is present) picks the GPU or the CPU variant."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    fp32_zero0 = config.zero_stage == 0 and not use_bf16(config, cuda)
    zero: dict[str, Any] = {"stage": config.zero_stage}
    if config.zero_stage >= 2:
        # Overlapping reduction with backward needs a second stream: a GPU thing.
        zero.update(overlap_comm=cuda, contiguous_gradients=True)
    if config.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": cuda}
    if config.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": cuda}
    if config.zero_stage == 3:
        # Consolidated weights at save time make export independent of the shard layout.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    optimizer_params: dict[str, Any] = {
        "lr": config.lr, "betas": list(config.betas), "eps": config.eps,
        "weight_decay": config.weight_decay,
    }
    if not config.offload_optimizer:
        # torch's AdamW inside DeepSpeed's wrappers (DeepSpeed's own FusedAdam is a JIT build that
        # needs nvcc at run time, and its arch parsing fails on torch cu130's "9.0a":
        # docs/TRAINING.md). Offloading keeps DeepSpeed's CPU Adam, which ZeRO-Offload requires.
        optimizer_params.update(torch_adam=True, **ADAMW_KERNEL)
    ds = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.grad_accum_steps,
        # At ZeRO-0 fp32 the engine clips itself (see the module docstring).
        "gradient_clipping": 0.0 if fp32_zero0 else config.grad_clip,
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "zero_optimization": zero,
        "bf16": {"enabled": use_bf16(config, cuda)},
        "steps_per_print": 2**31 - 1,  # our loop logs; DeepSpeed's own report would sync every step
        "wall_clock_breakdown": False,
    }
    return _merge(ds, config.deepspeed_overrides)


# The files in configs/deepspeed/: name -> (TrainConfig fields, GPU?). Generated, never edited
# by hand (tests/test_engine.py checks that they match :func:`deepspeed_config`).
DEEPSPEED_PRESETS: dict[str, tuple[dict[str, Any], bool]] = {
    "cpu_zero0": ({"zero_stage": 0}, False),
    "cpu_zero2": ({"zero_stage": 2}, False),
    "cpu_zero3": ({"zero_stage": 3}, False),
    "gpu_zero2": ({"zero_stage": 2}, True),
    "gpu_zero3": ({"zero_stage": 3}, True),
    "gpu_zero3_offload": ({"zero_stage": 3, "offload_optimizer": True, "offload_params": True}, True),
}


def preset_deepspeed_config(name: str) -> dict:
    """The JSON of ``configs/deepspeed/{name}.json`` (TrainConfig defaults otherwise)."""
    fields, cuda = DEEPSPEED_PRESETS[name]
    return deepspeed_config(TrainConfig(**fields), cuda=cuda)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def cosine_schedule(config: TrainConfig) -> Callable[[int], float]:
    """lr multiplier at optimiser step ``s``: linear warmup to 1, cosine decay to ``min_lr_ratio``."""
    warmup, total, floor = config.warmup_steps, config.max_steps, config.min_lr_ratio

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def select_trainable(model: nn.Module, config: TrainConfig) -> list[tuple[str, nn.Parameter]]:
    """Freeze what the config says; return the trainable ``(name, parameter)`` pairs.

    A prefix in ``trainable`` / ``frozen`` that matches no parameter is an error
    (a typo would otherwise silently train the wrong thing)."""
    names = [name for name, _ in model.named_parameters()]
    for key in ("trainable", "frozen"):
        for prefix in getattr(config, key):
            if not any(name.startswith(prefix) for name in names):
                raise ConfigError(f"train.{key}: prefix {prefix!r} matches no parameter of "
                                 f"{type(model).__name__} (first names: {', '.join(names[:5])})")
    selected = []
    for name, param in model.named_parameters():
        keep = param.requires_grad
        if config.trainable:
            keep = keep and any(name.startswith(p) for p in config.trainable)
        if any(name.startswith(p) for p in config.frozen):
            keep = False
        param.requires_grad_(keep)
        if keep:
            selected.append((name, param))
    if not selected:
        raise ValueError(f"train.trainable/frozen leave no trainable parameter in {type(model).__name__}")
    return selected


def _param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    # No decay on biases and norm gains (1-D), the usual AdamW practice.
    decay = [p for _, p in named if p.ndim >= 2]
    no_decay = [p for _, p in named if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def muon_optimizer(model: nn.Module, named: list[tuple[str, nn.Parameter]], config: TrainConfig):
    """:class:`~unified_ar.train.muon.MuonAdamW` over the trainable parameters: the model's
    :func:`~unified_ar.train.muon.muon_matrices` take Muon, the rest AdamW (the usual decay groups)."""
    from unified_ar.train.muon import MuonAdamW, muon_matrices

    matrices = muon_matrices(model)
    muon = [p for _, p in named if id(p) in matrices]
    groups = [{"params": muon, "use_muon": True, "weight_decay": config.weight_decay}] if muon else []
    groups += _param_groups([(n, p) for n, p in named if id(p) not in matrices], config.weight_decay)
    return MuonAdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay,
                     momentum=config.muon_momentum)


@dataclass
class MicroStep:
    """What one micro-batch did. ``loss`` is the mean over ranks (NaN when skipped as non-finite);
    ``metrics`` are this rank's."""

    loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    finite: bool = True
    stepped: bool = False  # an optimiser step was taken (accumulation boundary)


class Engine:
    """A model wrapped for training. Build it with :func:`build_engine`.

    ``micro_step(batch)`` runs forward + backward of one micro-batch and takes an
    optimiser step at each accumulation boundary. Checkpoint and export methods
    are collective: every rank calls them."""

    def __init__(self, ds_engine: Any, config: TrainConfig, trainable: list[tuple[str, nn.Parameter]],
                 rank: int, world_size: int):
        self.ds = ds_engine
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.trainable_names = [name for name, _ in trainable]
        self._params = [p for _, p in trainable]
        self._own_clip = config.zero_stage == 0 and not use_bf16(config)
        self.autocast = config.precision == "autocast_bf16"
        # step-dependent losses get the optimiser step in the batch (LlamaGen's VQ loss takes
        # global_step the same way)
        self._pass_global_step = bool(getattr(ds_engine.module, "takes_global_step", False))
        self._grad_norm: torch.Tensor | float | None = None
        if world_size == 1 and config.zero_stage == 0:
            # One rank has nothing to reduce; DeepSpeed would still flatten and copy every gradient.
            ds_engine.enable_backward_allreduce = False

    @property
    def module(self) -> nn.Module:
        """The unwrapped model (its parameters are ZeRO-3 partitions under stage 3)."""
        return self.ds.module

    @property
    def device(self) -> torch.device:
        return self.ds.device

    @property
    def global_step(self) -> int:
        """Optimiser steps taken (restored by :meth:`load_checkpoint`)."""
        return self.ds.global_steps

    @property
    def lr(self) -> float:
        return self.ds.get_lr()[0]

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def micro_step(self, batch: dict) -> MicroStep:
        """Forward + backward of one micro-batch; an optimiser step at the accumulation boundary.

        A non-finite loss (on any rank) skips the micro-batch on every rank: no
        backward, no step, and the accumulation boundary moves to the next batch."""
        batch = self.to_device(batch)
        if self._pass_global_step:
            batch = {**batch, "global_step": self.global_step}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            output = self.ds(batch)
        loss = output.loss
        value = float(loss.detach())
        if self.world_size > 1:
            # One all-reduce gives both the mean loss to log and whether any rank saw a non-finite one.
            shared = torch.tensor([value], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(shared)
            value = shared.item() / self.world_size
        metrics = _output_metrics(output)
        if not math.isfinite(value):
            return MicroStep(loss=float("nan"), metrics=metrics, finite=False)
        boundary = self.ds.is_gradient_accumulation_boundary()
        self.ds.backward(loss)
        if boundary and self._own_clip:
            self._grad_norm = self._clip()
        self.ds.step()
        return MicroStep(loss=value, metrics=metrics, stepped=boundary)

    def _clip(self) -> torch.Tensor:
        if self.config.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(self._params, self.config.grad_clip, foreach=True)
        return torch.nn.utils.get_total_norm([p.grad for p in self._params if p.grad is not None], foreach=True)

    def grad_norm(self) -> float | None:
        """Global gradient norm before clipping, of the last optimiser step."""
        norm = self._grad_norm if self._own_clip else self.ds.get_global_grad_norm()
        return None if norm is None else float(norm)

    def barrier(self) -> None:
        torch.distributed.barrier()

    def save_checkpoint(self, directory: str | Path, tag: str, client_state: dict) -> None:
        """DeepSpeed checkpoint ``directory/tag`` (model, optimizer, scheduler, ``client_state``).

        Does not write the ``latest`` pointer: :mod:`unified_ar.train.checkpoint`
        does that once every rank has finished."""
        self.ds.save_checkpoint(str(directory), tag=tag, client_state=client_state, save_latest=False)

    def load_checkpoint(self, directory: str | Path, tag: str) -> dict:
        """Restore model, optimizer and scheduler from ``directory/tag``; return its client state."""
        path, client_state = self.ds.load_checkpoint(str(directory), tag=tag)
        if path is None:
            raise FileNotFoundError(f"{directory}/{tag}: DeepSpeed found no checkpoint to load")
        return client_state or {}

    def export(self, directory: str | Path) -> Path:
        """Write a ``from_pretrained`` directory with the full weights (ZeRO-3 shards gathered).

        Collective; rank 0 writes through the model's own ``save_pretrained``."""
        directory = Path(directory)
        module = self.module
        if not hasattr(module, "save_pretrained"):
            raise TypeError(f"{type(module).__name__} has no save_pretrained(); cannot export to {directory}")
        if self.config.zero_stage == 3:
            # gathered parameters are views into DeepSpeed's flat all-gather buffers too
            with _deepspeed().zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                if self.is_main:
                    with _own_storage(module):
                        module.save_pretrained(directory)
        elif self.is_main:
            with _own_storage(module):
                module.save_pretrained(directory)
        self.barrier()
        return directory


@contextmanager
def _own_storage(module: nn.Module) -> Iterator[None]:
    """Give each parameter its own storage for the duration of a save.

    ZeRO-1/2 (and bf16) keep parameters as views into one flat buffer, and ZeRO-3's
    gathered parameters are views into the all-gather buffer, which safetensors refuses
    to save; the original storage is put back afterwards so that training can go on."""
    originals = [(p, p.data) for p in module.parameters()]
    try:
        for param, data in originals:
            param.data = data.clone()
        yield
    finally:
        for param, data in originals:
            param.data = data


def _output_metrics(output: Any) -> dict[str, float]:
    metrics = {}
    for name in ("text_loss", "image_loss"):
        value = getattr(output, name, None)
        if value is not None:
            metrics[name] = float(value.detach()) if torch.is_tensor(value) else float(value)
    for name, value in (getattr(output, "metrics", None) or {}).items():
        metrics[name] = float(value.detach()) if torch.is_tensor(value) else float(value)
    return metrics


def build_engine(model: nn.Module, config: TrainConfig) -> Engine:
    """Wrap ``model`` for training as ``config`` says (ZeRO stage, offload, precision, schedule).

    Freezes parameters per ``config.trainable`` / ``config.frozen``, enables gradient
    checkpointing when asked (an error if the model cannot), and initialises
    torch.distributed when needed (see :func:`init_distributed`)."""
    rank, world_size = init_distributed()
    if config.gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ValueError(f"train.gradient_checkpointing: {type(model).__name__} has no "
                             "gradient_checkpointing_enable()")
        model.gradient_checkpointing_enable()
    torch.manual_seed(config.seed)
    if getattr(model, "uniform_modules", False) is None:
        # several ranks must run the same modules; under ZeRO >= 1 DeepSpeed's optimizer steps every
        # parameter's (flat, zero-filled) gradient anyway, so the dummy passes change nothing there
        model.uniform_modules = world_size > 1 or config.zero_stage >= 1
    if config.lora is not None and getattr(model, "lora_adapter", None) is None:
        raise ConfigError(f"train.lora: {type(model).__name__} has no LoRA adapters (train.lora applies to "
                          "the unified stage, `unified-ar train`, only)")
    trainable = select_trainable(model, config)
    ds_config = deepspeed_config(config)
    schedule = cosine_schedule(config)
    groups = _param_groups(trainable, config.weight_decay)
    client = {}
    if config.optimizer == "muon":
        if use_bf16(config):
            raise ValueError("train.optimizer muon needs fp32 weights, and precision auto means DeepSpeed's "
                             "bf16 on a GPU: set train.precision fp32 or autocast_bf16")
        client["optimizer"] = muon_optimizer(model, trainable, config)
        ds_config.pop("optimizer")
    ds_engine, _, _, _ = _deepspeed().initialize(
        model=model,
        model_parameters=groups,
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        config=ds_config,
        dist_init_required=False,
        **client,
    )
    if config.channels_last:  # in place (param.data), so the optimizer keeps its parameters
        model.to(memory_format=torch.channels_last)
    return Engine(ds_engine, config, trainable, rank, world_size)


def consolidated_state_dict(checkpoint_root: str | Path, tag: str) -> dict[str, torch.Tensor]:
    """The full fp32 state dict of checkpoint ``checkpoint_root/tag``, ZeRO partitions merged.

    Needs no process group (offline export): ZeRO-1/2/3 checkpoints go through
    DeepSpeed's ``zero_to_fp32`` (the fp32 master weights, frozen parameters included),
    ZeRO-0 ones hold the full module state already."""
    folder = Path(checkpoint_root) / tag
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint")
    if any(folder.glob("zero_pp_rank_*_optim_states.pt")):
        _deepspeed()  # sets DS_ACCELERATOR before DeepSpeed's first import
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_root), tag=tag))
    states = folder / "mp_rank_00_model_states.pt"
    if not states.is_file():
        raise FileNotFoundError(f"{states}: missing; {folder} is not a complete DeepSpeed checkpoint")
    return dict(torch.load(states, map_location="cpu", weights_only=True)["module"])
