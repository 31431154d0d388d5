"""``unified-ar serve``: a real Gradio server on 127.0.0.1 with a tiny saved model, driven through
``gradio_client``: a turn about an uploaded picture, a drawing, a question about the drawing
(answered from its codes), streaming, an unreadable upload."""
from __future__ import annotations

import os
import socket

import pytest
from PIL import Image

from unified_helpers import tiny_model

gradio = pytest.importorskip("gradio", reason="serve needs gradio (pip install 'unified-ar[serve]')")
gradio_client = pytest.importorskip("gradio_client", reason="the serve tests drive it with gradio_client")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MAX_NEW = 5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from unified_ar.modeling import UnifiedARModel

    root = tmp_path_factory.mktemp("model")
    tiny_model(root / "tok").save_pretrained(root / "ckpt")
    return UnifiedARModel.from_pretrained(root / "ckpt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model):
    from unified_ar.commands.serve import build_app

    app = build_app(model, seed=0, max_new_tokens=MAX_NEW)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield app.local_url
    app.close()


@pytest.fixture()
def client(server):
    return gradio_client.Client(server, verbose=False)  # a new client: a new conversation


def local(model, steps):
    """What a Conversation says for the same steps (("attach", path) / ("draw", caption) / ("ask", text))."""
    from unified_ar.commands.chat import Conversation

    conversation, said = Conversation(model, max_new_tokens=MAX_NEW), []
    for kind, value in steps:
        said.append(getattr(conversation, kind)(value))
    return said


def texts(shown, role):
    return [part["text"] for m in shown if m["role"] == role for part in m["content"] if part["type"] == "text"]


def drawn_images(shown):
    return [Image.open(part["value"]) for m in shown if m["role"] == "assistant"
            for part in m["content"] if part["type"] == "component" and part["component"] == "image"]


def ask(client, text, *files):
    message = {"text": text, "files": [gradio_client.handle_file(str(f)) for f in files]}
    return client.predict(message, 0, api_name="/ask")


def test_a_turn_about_an_uploaded_picture(model, client, tmp_path):
    picture = tmp_path / "red.png"
    Image.new("RGB", (40, 24), (220, 30, 30)).save(picture)
    shown, box = ask(client, "what color is the circle?", picture)
    assert [m["role"] for m in shown] == ["user", "user", "assistant"]
    assert shown[0]["content"][0]["type"] == "file" and box == {"text": "", "files": []}
    _, reply = local(model, [("attach", picture), ("ask", "what color is the circle?")])
    assert texts(shown, "assistant") == [reply] and reply  # the picture's codes went into the prompt
    [no_picture] = local(model, [("ask", "what color is the circle?")])
    assert reply != no_picture


def test_draw_then_ask_about_the_drawing(model, client):
    shown, caption_box = client.predict("a red circle", 3.0, 0, api_name="/draw")
    assert caption_box == "" and texts(shown, "user") == ["draw: a red circle"]
    [image] = drawn_images(shown)
    expected, reply = local(model, [("draw", "a red circle"), ("ask", "what color is the circle?")])
    assert image.size == expected.size and list(image.convert("RGB").getdata()) == list(expected.getdata())
    shown, _ = ask(client, "what color is the circle?")
    [no_drawing] = local(model, [("ask", "what color is the circle?")])
    assert texts(shown, "assistant")[-1] == reply != no_drawing  # answered from the drawing's codes
    assert len(drawn_images(shown)) == 1 and len(shown) == 4


def test_the_reply_streams_token_by_token(model, client):
    job = client.submit({"text": "is there a square?", "files": []}, 0, api_name="/ask")
    replies = [texts(shown, "assistant")[-1] for shown, _ in job]
    [expected] = local(model, [("ask", "is there a square?")])
    assert replies[-1] == expected
    assert len(replies) >= 2 and all(b.startswith(a) and len(b) > len(a) for a, b in zip(replies, replies[1:]))


def test_an_unreadable_upload_is_one_line_and_the_conversation_goes_on(model, client, tmp_path):
    first, _ = ask(client, "what color is the circle?")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    shown, box = ask(client, "and now?", bad)
    assert texts(shown, "assistant")[-1].startswith("cannot attach: broken.png")
    assert box["text"] == "and now?"  # the question stays in the box
    assert shown[:len(first)] == first
    shown, _ = ask(client, "is there a square?")
    assert len(texts(shown, "assistant")) == 3 and not texts(shown, "assistant")[-1].startswith("cannot")


def test_clear_starts_a_new_conversation(model, client):
    ask(client, "what color is the circle?")
    assert client.predict(api_name="/clear") == []
    shown, _ = ask(client, "is there a square?")
    assert texts(shown, "assistant") == local(model, [("ask", "is there a square?")])


def test_a_taken_port_is_one_line(model, tmp_path, capsys):
    from unified_ar.cli import main as cli_main

    saved = tmp_path / "ckpt"
    model.save_pretrained(saved)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["serve", "--model", str(saved), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--port {port}" in err


def test_without_gradio_serve_names_the_extra(tmp_path, capsys, monkeypatch):
    from unified_ar.cli import main as cli_main

    monkeypatch.setitem(__import__("sys").modules, "gradio", None)  # import gradio -> ImportError
    assert cli_main(["serve", "--model", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "unified-ar serve: needs the serve extra: pip install 'unified-ar[serve]'"
