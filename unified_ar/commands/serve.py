"""``unified-ar serve``: a web app (Gradio) holding one conversation for chat and drawing.

Upload a picture and ask about it; type a caption and press *draw*: the drawing appears in the
conversation and the next question is answered from its codes, as ``unified-ar chat`` does.
Replies stream token by token. Each browser tab holds its own conversation; the model answers one
request at a time. ``--screenshot OUT.png`` drives the app in headless Chromium (a draw, then a
question) and saves what the page shows.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from unified_ar.devices import DEVICE_HELP

NEEDS = "needs the serve extra: pip install 'unified-ar[serve]'"
NO_GUIDANCE = "0: no classifier-free guidance"
DRAWING_PX = 256  # drawings are shown this tall, small ones with their pixels kept sharp
CSS = "#conversation img { image-rendering: pixelated; }"


class WebConversation:
    """A :class:`~unified_ar.commands.chat.Conversation` and what the page shows of it
    (Gradio chat messages: text, the uploaded pictures, the drawings)."""

    def __init__(self, model, **settings):
        from unified_ar.commands.chat import Conversation

        self.conversation = Conversation(model, **settings)
        self.shown: list[dict] = []

    def say(self, role: str, content) -> list[dict]:
        self.shown.append({"role": role, "content": content})
        return self.shown

    def attach(self, files: list[str]) -> bool:
        """Show and attach uploaded pictures; False (and one line said) for one that cannot be read."""
        for path in files:
            self.say("user", {"path": path})
            try:
                self.conversation.attach(Path(path))
            except (OSError, ValueError) as error:  # not an image, truncated: the conversation goes on
                self.say("assistant", "cannot attach: " + str(error).replace(path, Path(path).name))
                return False
        return True

    def reply(self, text: str, seed: int) -> Iterator[list[dict]]:
        """Ask ``text``: the shown messages after each piece of the streamed reply."""
        self.say("user", text)
        self.conversation.seed = seed
        try:
            pieces = self.conversation.stream(text)
            reply = next(pieces, "")
        except ValueError as error:  # the conversation outgrew the model's context
            yield self.say("assistant", f"cannot answer: {error} (clear the conversation to start over)")
            return
        self.say("assistant", reply)
        yield self.shown
        for piece in pieces:
            reply += piece
            self.shown[-1] = {"role": "assistant", "content": reply}
            yield self.shown

    def draw(self, caption: str, guidance_scale: float, seed: int) -> list[dict]:
        import gradio as gr

        caption = caption.strip()
        if not caption:
            return self.say("assistant", "(type a caption to draw)")
        self.say("user", f"draw: {caption}")
        conversation = self.conversation
        conversation.seed = seed
        conversation.image_cfg = replace(conversation.image_cfg, guidance_scale=guidance_scale or None)
        try:
            image = conversation.draw(caption)
        except ValueError as error:  # a caption over the model's context
            return self.say("assistant", f"cannot draw: {error}")
        return self.say("assistant", gr.Image(image, format="png", show_label=False, height=DRAWING_PX))


def build_app(model, seed: int = 0, **settings):
    """The Gradio Blocks app over ``model`` (``settings`` as :class:`Conversation` takes them)."""
    import gradio as gr

    from unified_ar.generation_config import flags_given
    from unified_ar.sampling import ImageSamplingConfig

    given = flags_given(guidance_scale=settings.get("guidance_scale"))
    default_guidance = ImageSamplingConfig.for_model(model, **given).guidance_scale or 0.0

    def state(web: WebConversation | None) -> WebConversation:
        return web if web is not None else WebConversation(model, **settings)

    def ask(message, web, seed_value):
        """A MultimodalTextbox value (``text``, ``files``): attach the pictures, stream the reply."""
        web, message = state(web), message or {}
        text = (message.get("text") or "").strip()
        if not web.attach(message.get("files") or []):
            yield list(web.shown), web, {"text": text, "files": []}  # the question stays in the box
            return
        if not text:
            yield list(web.say("assistant", "(picture attached: ask about it)")), web, None
            return
        for shown in web.reply(text, int(seed_value or 0)):
            yield list(shown), web, None

    def draw(caption, web, guidance, seed_value):
        web = state(web)
        return list(web.draw(caption or "", float(guidance or 0.0), int(seed_value or 0))), web, ""

    def clear():
        return [], None

    with gr.Blocks(title="unified-ar") as app:
        gr.Markdown("### unified-ar: ask about a picture, draw one, ask about the drawing")
        web = gr.State(None)
        chatbot = gr.Chatbot(label="conversation", elem_id="conversation", height=460)
        message = gr.MultimodalTextbox(placeholder="Ask a question; attach a picture to ask about it",
                                       file_types=["image"], sources=["upload"], show_label=False,
                                       elem_id="message")
        with gr.Row():
            caption = gr.Textbox(placeholder="A caption to draw", show_label=False, scale=4, elem_id="caption")
            draw_button = gr.Button("draw", variant="primary", scale=1, elem_id="draw")
        with gr.Row():
            guidance = gr.Slider(0.0, 10.0, value=default_guidance, step=0.1, label="guidance scale",
                                 info=NO_GUIDANCE)
            seed_box = gr.Number(value=seed, precision=0, label="seed",
                                 info="the n-th drawing uses seed + n")
            clear_button = gr.Button("clear conversation")
        one_model = dict(concurrency_limit=1, concurrency_id="model")  # one request at a time
        message.submit(ask, [message, web, seed_box], [chatbot, web, message], api_name="ask", **one_model)
        draw_event = dict(fn=draw, inputs=[caption, web, guidance, seed_box], outputs=[chatbot, web, caption],
                          **one_model)
        draw_button.click(**draw_event, api_name="draw")
        caption.submit(**draw_event, api_name=False)
        clear_button.click(clear, None, [chatbot, web], api_name="clear")
    return app


class ScreenshotError(Exception):
    """Why ``--screenshot`` cannot be taken here: a missing tool, a page that never showed a step."""


def browser_paths() -> tuple[str, str]:
    """(chromedriver, chromium) on the PATH, with selenium importable; else :class:`ScreenshotError`."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise ScreenshotError(f"--screenshot {NEEDS}") from None
    driver, browser = shutil.which("chromedriver"), shutil.which("chromium") or shutil.which("chrome")
    if driver is None or browser is None:
        raise ScreenshotError("--screenshot needs chromium and chromedriver on the PATH "
                          "(Debian: apt-get install chromium chromium-driver)")
    return driver, browser


def screenshot(url: str, out: Path, caption: str, question: str, timeout: float = 300.0) -> None:
    """Open ``url`` in headless Chromium, draw ``caption``, ask ``question``, save the page as PNG."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver_path, browser = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    step = "the page to load"
    try:
        wait = WebDriverWait(driver, timeout)
        driver.get(url)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#caption textarea"))
        box.send_keys(caption)
        driver.find_element(By.CSS_SELECTOR, "#draw").click()
        step = "the drawing"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#conversation img"))
        driver.find_element(By.CSS_SELECTOR, "#message textarea").send_keys(question, Keys.ENTER)
        step = "the reply"
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#conversation .message-row")) >= 4
                   and not d.find_elements(By.CSS_SELECTOR, "#conversation .pending, .eta-bar"))
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    except TimeoutException:
        raise ScreenshotError(f"--screenshot: no {step} in the browser after {timeout:.0f} s") from None
    finally:
        driver.quit()


def main(argv: list[str] | None = None) -> int:
    from unified_ar.commands.chat import load_model
    from unified_ar.generation_config import MODEL_DEFAULT

    p = argparse.ArgumentParser(prog="unified-ar serve", description=__doc__)
    p.add_argument("--model", required=True, help="a save_pretrained directory")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=int, default=0, help="the seed control's starting value")
    p.add_argument("--guidance-scale", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--max-new-tokens", type=int, default=None, help=MODEL_DEFAULT)
    p.add_argument("--temperature", type=float, default=None, help=MODEL_DEFAULT + " (0: greedy)")
    p.add_argument("--screenshot", metavar="OUT.png", type=Path, default=None,
                   help="draw --caption, ask --question in headless Chromium, save the page, exit "
                        "(needs selenium and chromium-driver)")
    p.add_argument("--caption", default="a red circle at the top left", help="with --screenshot")
    p.add_argument("--question", default="what color is the circle?", help="with --screenshot")
    args = p.parse_args(argv)
    try:
        import gradio  # noqa: F401  (checked before the model loads)

        if args.screenshot is not None:
            browser_paths()
    except (ImportError, ScreenshotError) as error:
        return fail(NEEDS if isinstance(error, ImportError) else str(error))
    model = load_model("serve", args.model, args.device)
    if model is None:
        return 2
    app = build_app(model, args.seed, guidance_scale=args.guidance_scale,
                    max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    try:
        app.launch(server_name=args.host, server_port=args.port, css=CSS, quiet=args.screenshot is not None,
                   prevent_thread_lock=args.screenshot is not None)
    except OSError as error:  # the port is taken, the host is not this machine's
        return fail(f"--host {args.host} --port {args.port}: {error}")
    if args.screenshot is None:
        return 0
    try:
        screenshot(app.local_url, args.screenshot, args.caption, args.question)
    except ScreenshotError as error:
        return fail(str(error))
    finally:
        app.close()
    print(f"wrote {args.screenshot}")
    return 0


def fail(message: str) -> int:
    print(f"unified-ar serve: {message}", file=sys.stderr)
    return 2
