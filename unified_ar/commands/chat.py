"""``unified-ar chat``: interactive multi-turn chat; ``/draw <caption>`` draws, and the next turns
can ask about the drawing straight from its codes (no decode/re-encode round trip).

Commands: ``/draw <caption>``, ``/image <path>`` (attach a picture to the next turn),
``/reset``, ``/quit``. A drawing or picture is attached to the next user turn. A picture that
cannot be read, a drawing or a reply that cannot be made, is one line; the conversation goes on.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from unified_ar.devices import DEVICE_HELP
from unified_ar.generation_config import MODEL_DEFAULT

HELP = "commands: /draw <caption>, /image <path>, /reset, /quit"


class Conversation:
    """Conversation state: messages and the codes of the images they contain, in order; the
    ``chat`` command and the ``serve`` web app both hold one."""

    def __init__(self, model, seed: int = 0, **settings):
        """``settings``: sampling settings over the model's ``generation_config.json``
        (``guidance_scale`` for drawings; ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``
        for replies); a None value is not given. The n-th drawing samples with ``seed + n``."""
        from unified_ar.generation_config import flags_given
        from unified_ar.sampling import ImageSamplingConfig, TextSamplingConfig

        self.model, self.seed = model, seed
        settings = flags_given(**settings)
        image = {k: settings.pop(k) for k in ("guidance_scale",) if k in settings}
        self.image_cfg = ImageSamplingConfig.for_model(model, **image)
        self.text_cfg = TextSamplingConfig.for_model(model, **settings)
        self.reset()

    def reset(self) -> None:
        self.messages: list[dict] = []
        self.images: list = []  # codes [N] per <image> in the messages
        self.pending = None  # codes attached to the next user turn
        self.drawings = 0

    def attach(self, image) -> None:
        """Attach a picture (PIL image or file path, under the model's image rule) to the next turn.
        An unreadable or missing file raises ``OSError`` / ``ValueError`` naming it; nothing changes."""
        from unified_ar.sampling import image_to_codes

        self.pending = image_to_codes(self.model, image)

    def draw(self, caption: str):
        """Draw ``caption`` (PIL image); its codes are attached to the next turn."""
        from unified_ar.sampling import generate_images

        sample = generate_images(self.model, [caption], seeds=[self.seed + self.drawings], cfg=self.image_cfg)
        self.drawings += 1
        self.pending = sample.codes[0].flatten()
        return sample.images[0]

    def stream(self, text: str) -> Iterator[str]:
        """Ask ``text`` (with the attached picture, if any), yielding the reply's text token by
        token. The turn joins the conversation once the first piece is sampled; the reply is the
        text streamed so far if the caller stops early. A prompt over the model's context raises
        ``ValueError`` before anything changes."""
        import torch

        from unified_ar.sampling import stream_text
        from unified_ar.sequences import chat_prompt

        images = self.images + ([self.pending] if self.pending is not None else [])
        content = ("<image>\n" + text) if self.pending is not None else text
        messages = self.messages + [{"role": "user", "content": content}]
        prompt = chat_prompt(self.model.layout, self.model.tokenizer, messages, self.model.num_image_tokens)
        codes = torch.stack(images) if images else None
        pieces = stream_text(self.model, prompt, codes, self.text_cfg, seed=self.seed + len(messages))
        first = next(pieces, "")  # the context check and prefill run here
        self.messages, self.images, self.pending = messages, images, None
        reply = [first]
        try:
            if first:
                yield first
            for piece in pieces:
                reply.append(piece)
                yield piece
        finally:
            self.messages.append({"role": "assistant", "content": "".join(reply)})

    def ask(self, text: str) -> str:
        return "".join(self.stream(text))


class ChatSession(Conversation):
    """A conversation driven by lines of input (the ``chat`` command); drawings go to ``out_dir``."""

    def __init__(self, model, out_dir: Path, seed: int = 0, **settings):
        super().__init__(model, seed, **settings)
        self.out_dir = out_dir

    def save_drawing(self, caption: str) -> Path:
        path = self.out_dir / f"drawing_{self.drawings:03d}.png"
        image = self.draw(caption)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return path

    def handle(self, line: str) -> str | None:
        """One line of user input -> the text to print (None to quit)."""
        line = line.strip()
        if line in ("/quit", "/exit"):
            return None
        if line == "/reset":
            self.reset()
            return "(conversation cleared)"
        if line.startswith("/draw"):
            caption = line[len("/draw"):].strip()
            if not caption:
                return "usage: /draw <caption>"
            try:
                return f"(drew {self.save_drawing(caption)}; ask about it next)"
            except (OSError, ValueError) as error:  # a caption over the context, an unwritable --out
                return f"cannot draw: {error}"
        if line.startswith("/image"):
            path = Path(line[len("/image"):].strip())
            try:
                self.attach(path)
            except (OSError, ValueError) as error:  # missing or unreadable: the conversation goes on
                return f"cannot attach: {error}"
            return f"(attached {path} to the next turn)"
        if line.startswith("/") or not line:
            return HELP
        try:
            return self.ask(line)
        except ValueError as error:  # the conversation outgrew the model's context
            return f"cannot answer: {error} (/reset starts over)"


def load_model(command: str, model_dir: str, device: str):
    """The model of ``--model`` on ``--device``, or None after one line naming what is wrong with
    the folder (missing, not a model folder, broken)."""
    from unified_ar.devices import resolve_device
    from unified_ar.modeling import UnifiedARModel

    try:
        return UnifiedARModel.from_pretrained(model_dir, device=resolve_device(device))
    except (OSError, ValueError) as error:
        print(f"unified-ar {command}: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="unified-ar chat", description=__doc__)
    p.add_argument("--model", required=True, help="a save_pretrained directory")
    p.add_argument("--image", default=None, help="a picture for the first turn")
    p.add_argument("--out", default="chat_images", help="where drawings are saved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance-scale", type=float, default=None, help=MODEL_DEFAULT)
    p.add_argument("--max-new-tokens", type=int, default=None, help=MODEL_DEFAULT)
    p.add_argument("--temperature", type=float, default=None, help=MODEL_DEFAULT + " (0: greedy)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    args = p.parse_args(argv)
    model = load_model("chat", args.model, args.device)
    if model is None:
        return 2
    session = ChatSession(model, Path(args.out), args.seed, guidance_scale=args.guidance_scale,
                          max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if args.image:
        try:
            session.attach(Path(args.image))
        except (OSError, ValueError) as error:
            print(f"unified-ar chat: --image: {error}", file=sys.stderr)
            return 2
    print(HELP)
    try:
        for line in sys.stdin:
            reply = session.handle(line)
            if reply is None:
                break
            print(reply, flush=True)
    except KeyboardInterrupt:  # Ctrl-C ends the chat like /quit
        print()
    return 0
