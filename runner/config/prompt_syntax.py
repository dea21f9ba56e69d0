"""AUTOMATIC1111's attention syntax written as compel's, for `sampling.prompt_syntax=compel`.

compel reads `(word)1.3`, `word+`, `(a b)-`, `("a", "b").blend(…)`; A1111 writes `(word:1.3)`,
`(word)` (x1.1) and `[word]` (/1.1), which compel would read as plain text or as a group of weight 1.
Only A1111's forms are rewritten; a group compel already weights (followed by a number, `+`, `-` or
`.`) is left as written, and `\\(` stays a literal parenthesis in both. Torch-free: plain text in,
plain text out.
"""
from __future__ import annotations

import re
from typing import Optional, Tuple

UP = 1.1  # A1111: (word) multiplies attention by 1.1, [word] divides it by 1.1
_A1111_WEIGHT = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)")
_COMPEL_WEIGHTED = re.compile(r"[\d.+-]")
_METHOD = re.compile(r"\.[A-Za-z_]\w*$")  # `.blend`, `.and`, `.swap`: compel's arguments follow
_CLOSING = {"(": ")", "[": "]"}


def a1111_to_compel(text: str) -> str:
    """`a (cat:1.5) in [fog]` -> `a (cat)1.5 in (fog)0.909091`."""
    return _group(text, 0, None)[0]


def _group(text: str, start: int, closing) -> Tuple[str, int, Optional[float], bool]:
    """The translation of text[start:] up to `closing` (None: the end of the text), the index after
    it, A1111's explicit `:weight` when the group ended with one, and whether it was closed."""
    out = []
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i:i + 2])
            i += 2
            continue
        if closing == ")" and char == ":":
            weight = _A1111_WEIGHT.match(text, i)
            if weight is not None:
                return "".join(out), weight.end(), float(weight.group(1)), True
        if char == closing:
            return "".join(out), i + 1, None, True
        i += 1
        if char in _CLOSING:
            inner, i, weight, closed = _group(text, i, _CLOSING[char])
            if not closed:  # A1111 reads an unclosed bracket as text
                out.append(("\\(" if char == "(" else char) + inner)
            elif weight is None and char == "(" and (_COMPEL_WEIGHTED.match(text, i) or _METHOD.search("".join(out))):
                out.append(f"({inner})")  # compel's own: `(word)1.3`, `(word)+`, `("a", "b").blend(0.7, 0.3)`
            else:
                factor = weight if weight is not None else (UP if char == "(" else 1 / UP)
                out.append(f"({inner}){factor:g}")
        else:
            out.append("\\)" if char == ")" else char)  # a stray `)` is text in A1111
    return "".join(out), len(text), None, closing is None
