"""The sample / chat / model-info commands on a tiny saved model."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from unified_ar.cli import main as cli_main
from unified_helpers import tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    model = tiny_model(root / "tok")
    model.save_pretrained(root / "ckpt")
    return root / "ckpt"


def test_sample_writes_pngs_grid_and_record(saved, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a red circle"}\n\n{"prompt": "a blue square", "index": 3}\n')
    out = tmp_path / "out"
    assert cli_main(["sample", "--model", str(saved), "--prompts", str(prompts), "--out", str(out),
                     "--seed", "5", "--max-batch", "1"]) == 0
    record = json.loads((out / "samples.json").read_text())
    assert [s["prompt"] for s in record["samples"]] == ["a red circle", "a blue square"]
    assert [s["seed"] for s in record["samples"]] == [5, 6]
    assert record["settings"]["guidance_scale"] == 3.0
    assert Image.open(out / "00001.png").size == (16, 16) and (out / "grid.png").is_file()
    plain = tmp_path / "plain.txt"
    plain.write_text("a red circle\n")
    assert cli_main(["sample", "--model", str(saved), "--prompts", str(plain), "--out", str(tmp_path / "o2"),
                     "--seed", "5", "--no-cfg", "--cache", "static"]) == 0
    assert json.loads((tmp_path / "o2" / "samples.json").read_text())["settings"]["cache"] == "static"


def test_chat_draws_then_answers_about_the_drawing(saved, tmp_path, monkeypatch, capsys):
    lines = "/draw a red circle\nwhat color is the circle?\nis there a square?\n/quit\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert cli_main(["chat", "--model", str(saved), "--out", str(tmp_path), "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert any("drew" in line for line in printed) and (tmp_path / "drawing_000.png").is_file()


def test_chat_session_puts_the_drawn_codes_in_the_next_turn(saved, tmp_path):
    from unified_ar.commands.chat import ChatSession
    from unified_ar.modeling import UnifiedARModel

    session = ChatSession(UnifiedARModel.from_pretrained(saved), tmp_path, max_new_tokens=3)
    session.handle("/draw a red circle")
    drawn = session.pending.clone()
    session.handle("what color is the circle?")
    assert len(session.images) == 1 and (session.images[0] == drawn).all()
    assert session.messages[0]["content"].startswith("<image>")
    session.handle("is there a square?")  # a second turn still sees the same one image
    assert len(session.images) == 1 and len(session.messages) == 4


def test_model_info_prints_counts_and_memory(tmp_path, capsys):
    from unified_ar.config import packaged_config

    cfg = packaged_config("model/100m.yaml")
    assert cli_main(["model-info", "--config", str(cfg), "--comprehension_features", "vq"]) == 0
    out = capsys.readouterr().out
    assert "llm" in out and "85,641,984" in out and "bf16 training step" in out
    assert cli_main(["model-info", "--config", str(cfg), "--llm.preset", "nope"]) == 2


def test_gpu_check_exits_clearly_without_cuda(capsys):
    import torch

    from unified_ar.eval.gpu_check import main as gpu_main

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the no-CUDA exit path cannot be exercised here")
    assert gpu_main([]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


def test_gpu_check_runs_its_checks_on_the_cpu(capsys):
    """The GPU script's own code path (tiny sizes, CPU): every check runs or says why it is skipped."""
    from unified_ar.eval.gpu_check import main as gpu_main

    rc = gpu_main(["--device", "cpu", "--preset", "tiny", "--vq", "VQ-shapes", "--tokens", "36", "--batch", "2",
                   "--seq-len", "64", "--steps", "1", "--tokenizer-iters", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "SKIPPED: the FlashAttention and memory-efficient SDPA kernels need CUDA" in out
    assert out.count("greedy codes equal to dynamic's: 1.000") == 3
    assert "sdpa default kernel:" in out and "toklip_features" in out
    assert "all checks passed" in out


def test_device_option_names_what_this_machine_lacks(saved, tmp_path, capsys):
    import torch

    from unified_ar.config import ConfigError
    from unified_ar.devices import resolve_device

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "gpu0", "cuda:99"):
        with pytest.raises(ConfigError, match="--device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        prompts = tmp_path / "prompts.txt"
        prompts.write_text("a red circle\n")
        assert cli_main(["sample", "--model", str(saved), "--prompts", str(prompts), "--out", str(tmp_path / "o"),
                         "--device", "cuda"]) == 2
        assert "no CUDA device here" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="loading onto a GPU needs CUDA")
def test_from_pretrained_puts_every_part_on_the_gpu(saved, tmp_path):
    import torch

    from unified_ar.modeling import UnifiedARModel

    model = UnifiedARModel.from_pretrained(saved, device="cuda")
    assert {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()} == {"cuda"}
    cpu = UnifiedARModel.from_pretrained(saved)
    for (name, a), b in zip(model.state_dict().items(), cpu.state_dict().values()):
        assert torch.equal(a.cpu(), b), name
