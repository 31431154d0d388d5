"""``unified-ar chat`` keeps the conversation through unreadable pictures and over-long turns, and
says in one line what is wrong with a missing model folder."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from unified_ar.cli import main as cli_main
from unified_helpers import tiny_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    tiny_model(root / "tok").save_pretrained(root / "ckpt")
    return root / "ckpt"


@pytest.fixture(scope="module")
def session(saved, tmp_path_factory):
    from unified_ar.commands.chat import ChatSession
    from unified_ar.modeling import UnifiedARModel

    return ChatSession(UnifiedARModel.from_pretrained(saved), tmp_path_factory.mktemp("drawings"), max_new_tokens=3)


def bad_images(folder):
    """A text file named .png, a truncated PNG, a missing file, a folder."""
    (folder / "text.png").write_text("not an image\n")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    (folder / "truncated.png").write_bytes(buffer.getvalue()[:60])
    (folder / "dir.png").mkdir()
    return [folder / "text.png", folder / "truncated.png", folder / "missing.png", folder / "dir.png"]


def test_an_unreadable_picture_is_one_line_and_the_conversation_goes_on(session, tmp_path):
    session.reset()
    session.handle("/draw a red circle")
    session.handle("what color is the circle?")
    before = (list(session.messages), [c.clone() for c in session.images])
    for path in bad_images(tmp_path):
        reply = session.handle(f"/image {path}")
        assert reply.startswith("cannot attach: ") and str(path) in reply and "\n" not in reply, reply
        assert session.pending is None
    assert session.messages == before[0] and len(session.images) == len(before[1])
    session.handle("is there a square?")  # the next turn still sees the drawing, and only it
    assert len(session.messages) == 4 and len(session.images) == 1 and (session.images[0] == before[1][0]).all()


def test_a_turn_over_the_context_is_one_line_and_changes_nothing(session):
    from unified_ar.llm import max_context

    session.reset()
    session.handle("/draw a red circle")
    drawn = session.pending
    too_long = " ".join(["circle"] * (max_context(session.model.llm) + 8))
    reply = session.handle(too_long)
    assert reply.startswith("cannot answer: ") and "context" in reply, reply
    assert session.messages == [] and session.images == [] and session.pending is drawn
    session.handle("what color is the circle?")  # the drawing goes with the next turn that fits
    assert len(session.messages) == 2 and len(session.images) == 1


def test_stream_pieces_join_to_the_reply_of_generate_text(session):
    import torch

    from unified_ar.sampling import generate_text
    from unified_ar.sequences import chat_prompt

    model = session.model
    session.reset()
    session.draw("a red circle")
    codes = session.pending.clone()
    pieces = list(session.stream("what color is the circle?"))
    messages = [{"role": "user", "content": "<image>\nwhat color is the circle?"}]
    prompt = chat_prompt(model.layout, model.tokenizer, messages, model.num_image_tokens)
    new = generate_text(model, [prompt], torch.stack([codes]), session.text_cfg, seeds=session.seed + 1)[0]
    assert "".join(pieces) == model.tokenizer.decode(new, skip_special_tokens=True).strip()
    assert session.messages[-1] == {"role": "assistant", "content": "".join(pieces)}


def test_chat_and_serve_name_a_missing_model_folder(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "no_such_model"
    monkeypatch.setattr("sys.stdin", io.StringIO("/quit\n"))
    for command in ("chat", "serve"):
        if command == "serve":
            pytest.importorskip("gradio", reason="serve needs gradio (pip install 'unified-ar[serve]')")
        assert cli_main([command, "--model", str(missing)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(missing) in err and err.startswith(f"unified-ar {command}: ")
        assert "Traceback" not in err


def test_chat_with_an_unreadable_first_image_exits_2_in_one_line(saved, tmp_path, capsys):
    bad = bad_images(tmp_path)[1]
    assert cli_main(["chat", "--model", str(saved), "--image", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
