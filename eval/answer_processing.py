"""Answer normalisation exactly as the official VQA tools do it, quirks included.

Two official normalisers exist and differ in small ways; both are reproduced:

* GT-Vision-Lab ``vqaEval.py`` (master, "Fixed processing answers bug"):
  ``processPunctuation`` + ``processDigitArticle``, with the comma rule
  ``(\\d)(\\,)(\\d)``;
* EvalAI's answer processor (MMF ``EvalAIAnswerProcessor``, as vendored by LLaVA
  ``llava/eval/m4c_evaluator.py`` and lmms-eval): lower-case, drop ``,`` and ``?``,
  split ``'s``, then the same two steps with the comma rule ``(?<=\\d)(\\,)+(?=\\d)``.

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
"""
from __future__ import annotations

import re
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

PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
VQA_COMMA = re.compile(r"(\d)(\,)(\d)")          # vqaEval.py
EVALAI_COMMA = re.compile(r"(?<=\d)(\,)+(?=\d)")  # EvalAI / m4c_evaluator
# The official call passes re.UNICODE where re.sub expects ``count``.
_PERIOD_COUNT = int(re.UNICODE)


def process_punctuation(text: str, comma: re.Pattern = VQA_COMMA) -> str:
    """``processPunctuation`` of vqaEval.py (``comma=EVALAI_COMMA`` for EvalAI's variant)."""
    out = text
    has_digit_comma = comma.search(text) is not None
    for mark in PUNCTUATION:
        if (mark + " " in text or " " + mark in text) or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, _PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """``processDigitArticle``: lower-case, number words -> digits, drop articles, contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def clean_whitespace(text: str) -> str:
    """Newlines and tabs -> spaces, then strip: applied to every answer before matching."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def evalai_process(answer: str) -> str:
    """EvalAI's answer processor (LLaVA ``EvalAIAnswerProcessor.__call__``)."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = clean_whitespace(text)
    text = process_punctuation(text, EVALAI_COMMA)
    return process_digit_article(text)


def vqa_normalize(answer: str, comma: re.Pattern = VQA_COMMA) -> str:
    """Both normalisation steps of vqaEval.py, in its order."""
    return process_digit_article(process_punctuation(answer, comma))


def py2_round(value: float, ndigits: int = 2) -> float:
    """Python 2 ``round``: the exact binary value, ties away from zero.

    vqaEval.py was written for Python 2; Python 3's ``round`` sends exact ties to
    even (``round(0.625, 2) == 0.62`` where Python 2 gives ``0.63``)."""
    quantum = Decimal(1).scaleb(-ndigits)
    return float(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))
