"""``unified-ar chat``: interactive multi-turn chat; ``/draw <caption>`` draws, and the next turns
can ask about the drawing straight from its codes (no decode/re-encode round trip).

Commands: ``/draw <caption>``, ``/image <path>`` (attach a picture to the next turn),
``/reset``, ``/quit``. A drawing or picture is attached to the next user turn.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unified_ar.devices import DEVICE_HELP
from unified_ar.generation_config import MODEL_DEFAULT

HELP = "commands: /draw <caption>, /image <path>, /reset, /quit"


class ChatSession:
    """Conversation state: messages and the codes of the images they contain, in order."""

    def __init__(self, model, out_dir: Path, seed: int = 0, **settings):
        """``settings``: sampling settings over the model's ``generation_config.json``
        (``guidance_scale`` for drawings; ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``
        for replies); a None value is not given."""
        from unified_ar.generation_config import flags_given
        from unified_ar.sampling import ImageSamplingConfig, TextSamplingConfig

        self.model, self.out_dir, self.seed = model, out_dir, seed
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
        """Attach a picture (PIL image or file path, under the model's image rule) to the next turn."""
        from unified_ar.sampling import image_to_codes

        self.pending = image_to_codes(self.model, image)

    def draw(self, caption: str) -> Path:
        from unified_ar.sampling import generate_images

        sample = generate_images(self.model, [caption], seeds=[self.seed + self.drawings], cfg=self.image_cfg)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"drawing_{self.drawings:03d}.png"
        sample.images[0].save(path)
        self.drawings += 1
        self.pending = sample.codes[0].flatten()
        return path

    def ask(self, text: str) -> str:
        import torch

        from unified_ar.sampling import generate_text
        from unified_ar.sequences import chat_prompt

        if self.pending is not None:
            text = "<image>\n" + text
            self.images.append(self.pending)
            self.pending = None
        self.messages.append({"role": "user", "content": text})
        prompt = chat_prompt(self.model.layout, self.model.tokenizer, self.messages, self.model.num_image_tokens)
        codes = torch.stack(self.images) if self.images else None
        new = generate_text(self.model, [prompt], codes, self.text_cfg, seeds=self.seed + len(self.messages))[0]
        reply = self.model.tokenizer.decode(new, skip_special_tokens=True).strip()
        self.messages.append({"role": "assistant", "content": reply})
        return reply

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
            return f"(drew {self.draw(caption)}; ask about it next)" if caption else "usage: /draw <caption>"
        if line.startswith("/image"):
            path = Path(line[len("/image"):].strip())
            try:
                self.attach(path)
            except (OSError, ValueError) as error:  # missing or unreadable: the conversation goes on
                return f"cannot attach: {error}"
            return f"(attached {path} to the next turn)"
        if line.startswith("/") or not line:
            return HELP
        return self.ask(line)


def main(argv: list[str] | None = None) -> int:
    from unified_ar.devices import resolve_device
    from unified_ar.modeling import UnifiedARModel

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
    try:
        model = UnifiedARModel.from_pretrained(args.model, device=resolve_device(args.device))
        session = ChatSession(model, Path(args.out), args.seed, guidance_scale=args.guidance_scale,
                              max_new_tokens=args.max_new_tokens, temperature=args.temperature)
        if args.image:
            session.attach(Path(args.image))
    except (OSError, ValueError) as error:  # a missing / broken model folder or image
        print(f"unified-ar chat: {error}", file=sys.stderr)
        return 2
    print(HELP)
    for line in sys.stdin:
        reply = session.handle(line)
        if reply is None:
            break
        print(reply, flush=True)
    return 0
