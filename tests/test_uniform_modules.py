"""Under ZeRO-3 every module's forward all-gathers its parameters and its backward reduces their
gradients, so a training forward must run the same modules in the same order whatever a micro-batch
holds (captions, conversations, text), for every config; the dummy passes that ensure it change
neither the outputs nor the gradients. The 2-rank runs that failed without this: tests/test_zero.py."""
from __future__ import annotations

import pytest
import torch

from unified_ar.sequences import comprehension_example, generation_example
from unified_helpers import TINY_VQ, randomize_, tiny_model

CONV = [{"from": "human", "value": "<image>\nwhat color is the circle?"}, {"from": "gpt", "value": "red"}]
TOKLIP = {"vq_cfg": TINY_VQ, "img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2}
CONFIGS = {
    "vq": {"comprehension_features": "vq"},
    "toklip+semantic+pos": {"comprehension_features": "toklip", "semantic_gen_input": True,
                            "image_position_embedding": True},
    "tokens+pos": {"comprehension_features": "tokens", "image_position_embedding": True},
    "vq+semantic": {"comprehension_features": "vq", "semantic_gen_input": True},
}
VISUAL = ("projector", "gen_projector", "image_pos_embed")


def _model(tmp_path, name):
    model = tiny_model(tmp_path, **CONFIGS[name], **{"toklip.overrides": TOKLIP})
    model.uniform_modules = True  # as on a rank of a multi-rank run (this process has no process group)
    for part in VISUAL:
        if getattr(model, part) is not None:  # zero-initialised layers would hide a wrong gradient
            randomize_(getattr(model, part), seed=3)
    return model


def _batches(model) -> dict[str, dict]:
    """One micro-batch of each kind: generation only, comprehension only, text only, both."""
    n = model.num_image_tokens
    gen = generation_example(model.layout, model.tokenizer, "a red circle", torch.arange(n) % 32, False)
    comp = comprehension_example(model.layout, model.tokenizer, CONV, n)
    text = [model.layout.bos_id, *model.tokenizer("yes", add_special_tokens=False)["input_ids"], model.layout.eos_id]
    codes = torch.randint(0, 32, (1, n), generator=torch.Generator().manual_seed(0))

    def batch(*ids, images=0):
        row = [t for seq in ids for t in seq]
        return {"input_ids": torch.tensor([row]), "labels": torch.tensor([row]),
                "image_codes": codes[:images]}

    return {"generation": batch(gen.input_ids), "comprehension": batch(comp.input_ids, images=1),
            "text": batch(text), "both": batch(gen.input_ids, comp.input_ids, images=1)}


def _modules_run(model, batch) -> list[str]:
    """Names of the modules with parameters whose forward ran, in order."""
    names, handles = [], []
    for name, module in model.named_modules():
        if name and any(True for _ in module.parameters(recurse=False)):
            handles.append(module.register_forward_pre_hook(lambda m, a, name=name: names.append(name)))
    try:
        model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return names


@pytest.mark.parametrize("name", CONFIGS)
def test_training_forward_runs_the_same_modules_whatever_the_batch_holds(tmp_path, name):
    model = _model(tmp_path, name).train()
    runs = {kind: _modules_run(model, batch) for kind, batch in _batches(model).items()}
    assert all(run == runs["both"] for run in runs.values()), {k: len(v) for k, v in runs.items()}
    parts = [part for part in VISUAL if getattr(model, part) is not None]
    assert all(any(n.startswith(part) for n in runs["text"]) for part in parts)


@pytest.mark.parametrize("name", CONFIGS)
def test_dummy_passes_change_no_output_and_give_zero_gradients(tmp_path, name):
    model = _model(tmp_path, name)
    for kind, batch in _batches(model).items():
        with torch.no_grad():  # eval mode under no_grad: no dummy passes (inference)
            reference = model.eval()(batch).logits
        model.train().zero_grad(set_to_none=True)
        out = model(batch)
        assert torch.equal(out.logits, reference), kind
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        assert all(g is not None for g in grads.values()), kind  # every trainable part is on the graph
        unused = {"generation": ["projector"], "comprehension": ["gen_projector"],
                  "text": list(VISUAL)}.get(kind, [])
        if model.config.comprehension_features == "tokens":  # its comprehension path is the embeddings
            unused = [u for u in unused if u != "projector"]
        for n, g in grads.items():
            if n.split(".")[0] in unused:
                assert not g.any(), f"{kind}: {n} has a non-zero gradient from a dummy pass"


def test_inference_skips_the_dummy_passes(tmp_path):
    model = _model(tmp_path, "toklip+semantic+pos").eval()
    with torch.no_grad():
        run = _modules_run(model, _batches(model)["text"])
    assert not any(n.startswith(VISUAL) or n.startswith("toklip") for n in run), run


def test_micro_batch_without_targets_still_runs_a_backward(tmp_path):
    model = _model(tmp_path, "vq").train()
    batch = _batches(model)["text"]
    out = model({**batch, "labels": torch.full_like(batch["labels"], -100)})
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()
    assert not model.projector.net[0].weight.grad.any()


def test_a_single_rank_runs_only_what_its_micro_batch_needs(tmp_path):
    """Without a process group of several ranks no dummy runs: a parameter without work keeps no
    gradient, so a plain optimizer leaves it alone (a zero gradient would move it by its momentum)."""
    model = tiny_model(tmp_path, **CONFIGS["toklip+semantic+pos"], **{"toklip.overrides": TOKLIP}).train()
    assert model.uniform_modules is None and not model.runs_uniform_modules()
    batch = _batches(model)["text"]
    assert not any(name.startswith(VISUAL) for name in _modules_run(model, batch))
    model(batch).loss.backward()
    assert all(p.grad is None for p in model.projector.parameters())
