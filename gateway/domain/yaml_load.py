"""Read a YAML file exactly as PyYAML's safe loader over libyaml reads it (YAML 1.1), in a tenth of the time.

Why: the registry of 12,000 elders is 4.8 MB of YAML. libyaml's parser under PyYAML's
resolver and constructor takes 4-7 s for it, almost all of it Python work per scalar;
issue 19 asks for the whole import in under 3 s. ryaml (serde's YAML parser, in Rust)
reads it in about 0.5 s, but it reads YAML 1.2: ``yes`` and ``no`` stay strings,
``18:30`` is not the number 1110, ``010`` is not 8, ``1e5`` is a float, dates stay
strings. An operator's file must mean what it meant yesterday, so the fast reader is
used only when the text cannot be read two ways:

- every plain token that either version would type (numbers, dates, booleans, ``<<``,
  ``=``, tags) is found with one regular-expression pass over the text; tokens of the
  shapes both versions read alike (``150``, ``31.2304``) pass at once, any other is read
  alone by both and must give the same value;
- directives, several documents, and characters PyYAML refuses send the file to PyYAML.

When in doubt, or when ryaml refuses the text (a duplicate key, a number too large),
PyYAML reads it, so the result and the errors are PyYAML's. A token inside a quoted
string can only cause a needless fallback, never a wrong reading.
"""

from __future__ import annotations

import math
import re
from typing import Any

import ryaml
import yaml

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# one pass finds every plain token that either version might type: after whitespace or a flow
# indicator, a number or a date, a YAML 1.1 boolean that 1.2 reads as a string, a merge key
# (<<), a value key (=), a tag (!), an anchor (&: PyYAML refuses one used twice), .inf or .nan
_TOKENS = re.compile(
    r"[\s,\[\]{}]([-+.]?[0-9][^\s,\[\]{}'\"#]*"
    r"|(?:yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)(?=[\s,\[\]{}#]|:(?:\s|\Z)|\Z)"
    r"|<<|=|!|&|\.[a-zA-Z])"
)
# the shapes of number both versions read as the same int or float
_ALIKE = re.compile(r"[-+]?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?:?")
_SIGNED = {f"{sign}{digit}" for sign in "-+." for digit in "0123456789"}
_DOCUMENT_MARKS = re.compile(r"^(?:%|---|\.\.\.)", re.MULTILINE)
# what PyYAML's reader refuses (yaml/reader.py)
_NON_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def load_yaml(text: str) -> Any:
    """``yaml.load(text, CSafeLoader)``: the same value, or the same ``yaml.YAMLError``."""
    if _one_reading(text):
        try:
            return ryaml.loads(text)
        except Exception:  # whatever ryaml refuses, PyYAML reads or explains
            pass
    return yaml.load(text, Loader=_LOADER)


def _one_reading(text: str) -> bool:
    """True when no token of ``text`` reads differently in YAML 1.1 and 1.2."""
    body = text[4:] if text.startswith("---\n") else text
    if _DOCUMENT_MARKS.search(body) or _NON_PRINTABLE.search(text):
        return False
    for token in set(_TOKENS.findall("\n" + text)):
        if not (token[:1].isdigit() or token[:2] in _SIGNED):
            return False  # a boolean, <<, =, a tag, .inf: read by PyYAML
        if not _ALIKE.fullmatch(token) and not _reads_alike(token):
            return False
    return True


def _reads_alike(token: str) -> bool:
    try:
        old = yaml.load(token, Loader=_LOADER)
        new = ryaml.loads(token)
    except Exception:  # either refusing it is a difference
        return False
    return _same(old, new)


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
