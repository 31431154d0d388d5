"""Answer normalisation exactly as the official VQA tools do it, quirks included.

Three official normalisers exist and differ in small ways; each is a :class:`Rules`:

* ``VQA_EVAL``: GT-Vision-Lab ``vqaEval.py`` (master, "Fixed processing answers bug"),
  a Python 2 script: ``processPunctuation`` + ``processDigitArticle`` with the comma
  rule ``(\\d)(\\,)(\\d)``; ``\\d`` is ASCII only (no ``re.UNICODE`` flag in
  Python 2), ``lower()``/``strip()``/``split()`` follow Python 2 ``unicode``;
* ``VIZWIZ_EVAL``: VizWiz's ``VQAEval`` (Qing Li's VizWiz API, Python 3): the same
  steps under Python 3 with its own contraction table, whose values (and most keys)
  carry a curly apostrophe (``dont`` -> ``don’t``);
* ``EVALAI``: EvalAI's answer processor (MMF ``EvalAIAnswerProcessor``, as vendored by
  LLaVA ``llava/eval/m4c_evaluator.py`` and lmms-eval), Python 3: lower-case, drop
  ``,`` and ``?``, split ``'s``, then the two steps with the comma rule
  ``(?<=\\d)(\\,)+(?=\\d)``.

Quirks kept on purpose because published numbers depend on them:

* the period regex ``(?!<=\\d)(\\.)(?!\\d)`` is a negative *look-ahead* for the
  literal ``<=`` (a typo for a look-behind), so it strips every period not
  followed by a digit;
* ``re.sub(pattern, "", text, re.UNICODE)`` passes ``re.UNICODE`` (32) as the
  *count* argument, so at most 32 periods are removed;
* whether a punctuation mark is deleted or replaced by a space depends on the
  *input* text (a space next to that mark anywhere, or any ``digit,digit``);
* contractions are looked up after lower-casing, so the capitalised keys
  (``Im``, ``Ive``, ...) never match.

Python 2 text semantics (``VQA_EVAL``) reproduced: ``\\d`` is ``[0-9]``;
``lower()`` maps each character alone (no final-sigma rule, ``İ`` -> ``i``);
U+180E counts as whitespace. Characters added to Unicode after 5.2 (Python
2.7's database) are lower-cased as Python 3 does (not reproduced).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

# Written as "key=value" pairs; the mapping is data that must equal the official
# table entry for entry (it decides which answers count as equal).
_CONTRACTION_PAIRS = """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't
couldn'tve=couldn't've couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't
hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't havent=haven't
hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's
Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd itd've=it'd've
it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't
mustve=must've neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't
ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't shed've=she'd've
she'dve=she'd've she's=she's shouldve=should've shouldnt=shouldn't
shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll
somebodys=somebody's someoned=someone'd someoned've=someone'd've
someone'dve=someone'd've someonell=someone'll someones=someone's
somethingd=something'd somethingd've=something'd've something'dve=something'd've
somethingll=something'll thats=that's thered=there'd thered've=there'd've
there'dve=there'd've therere=there're theres=there's theyd=they'd theyd've=they'd've
they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't
whatll=what'll whatre=what're whats=what's whatve=what've whens=when's
whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've
who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're
whys=why's wont=won't wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've
wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd
youd've=you'd've you'dve=you'd've youll=you'll youre=you're youve=you've
"""
CONTRACTIONS: dict[str, str] = dict(pair.split("=", 1) for pair in _CONTRACTION_PAIRS.split())

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
               ">", "<", "@", "`", ",", "?", "!")

# VizWiz's table is the same 120 entries with the apostrophe curly (’) in keys and
# values, except these: eight entries kept straight throughout, and two whose key
# keeps its straight apostrophe (their value is curly).
_VIZWIZ_STRAIGHT = ("aint", "arent", "cant", "couldve", "couldnt", "weve", "wheres", "whove")
_VIZWIZ_STRAIGHT_KEY = ("couldn'tve", "hadn'tve")


def _curly(text: str) -> str:
    return text.replace("'", "\u2019")


def _vizwiz_contractions() -> dict[str, str]:
    table = {}
    for key, value in CONTRACTIONS.items():
        if key in _VIZWIZ_STRAIGHT:
            table[key] = value
        elif key in _VIZWIZ_STRAIGHT_KEY:
            table[key] = _curly(value)
        else:
            table[_curly(key)] = _curly(value)
    return table


VIZWIZ_CONTRACTIONS: dict[str, str] = _vizwiz_contractions()

# Python 2 ``unicode`` whitespace: Python 3's plus U+180E (MONGOLIAN VOWEL SEPARATOR).
PY2_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u180e" + "".join(
    chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"

PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
VQA_COMMA = re.compile(r"(\d)(\,)(\d)")          # vqaEval.py / VizWiz VQAEval
EVALAI_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")  # EvalAI / m4c_evaluator
# Python 2 compiled these without re.UNICODE: \d is [0-9] there.
PERIOD_STRIP_PY2 = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
VQA_COMMA_PY2 = re.compile(r"(\d)(\,)(\d)", re.ASCII)
# The official call passes re.UNICODE where re.sub expects ``count``.
_PERIOD_COUNT = int(re.UNICODE)


@dataclass(frozen=True)
class Rules:
    """One official normaliser: its regexes, contraction table and Python version."""

    comma: re.Pattern
    period: re.Pattern
    contractions: dict
    python2: bool


VQA_EVAL = Rules(VQA_COMMA_PY2, PERIOD_STRIP_PY2, CONTRACTIONS, python2=True)
VIZWIZ_EVAL = Rules(VQA_COMMA, PERIOD_STRIP, VIZWIZ_CONTRACTIONS, python2=False)
EVALAI = Rules(EVALAI_COMMA, PERIOD_STRIP, CONTRACTIONS, python2=False)


def _lower(text: str, python2: bool) -> str:
    if not python2:
        return text.lower()
    # Python 2 unicode.lower(): one character at a time, simple mapping only.
    return "".join("i" if c == "\u0130" else c.lower() for c in text)


def _split(text: str, python2: bool) -> list[str]:
    return text.replace("\u180e", " ").split() if python2 else text.split()


def process_punctuation(text: str, rules: Rules = VQA_EVAL) -> str:
    """``processPunctuation`` of the official script ``rules`` stands for."""
    out = text
    has_digit_comma = rules.comma.search(text) is not None
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return rules.period.sub("", out, _PERIOD_COUNT)


def process_digit_article(text: str, rules: Rules = VQA_EVAL) -> str:
    """``processDigitArticle``: lower-case, number words -> digits, drop articles, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in _split(_lower(text, rules.python2), rules.python2)]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(rules.contractions.get(w, w) for w in words)


def clean_whitespace(text: str, python2: bool = False) -> str:
    """Newlines and tabs -> spaces, then strip (Python 2 or 3 whitespace)."""
    text = text.replace("\n", " ").replace("\t", " ")
    return text.strip(PY2_WHITESPACE) if python2 else text.strip()


def evalai_process(answer: str) -> str:
    """EvalAI's answer processor (LLaVA ``EvalAIAnswerProcessor.__call__``)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = clean_whitespace(text)
    return process_digit_article(process_punctuation(text, EVALAI), EVALAI)


def vqa_normalize(answer: str, rules: Rules = VQA_EVAL) -> str:
    """Both normalisation steps of the official script, in its order."""
    return process_digit_article(process_punctuation(answer, rules), rules)


def py2_round(value: float, ndigits: int = 2) -> float:
    """Python 2 ``round``: the exact binary value, ties away from zero.

    vqaEval.py was written for Python 2; Python 3's ``round`` sends exact ties to
    even (``round(0.625, 2) == 0.62`` where Python 2 gives ``0.63``)."""
    quantum = Decimal(1).scaleb(-ndigits)
    return float(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))
