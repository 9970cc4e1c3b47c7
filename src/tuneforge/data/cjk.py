"""Chinese, Japanese and Korean characters: the one home of the ranges every part of tuneforge uses.

Three questions, three answers, kept side by side so they are read (and changed) together:

- :data:`CJK_SCRIPTS`: the scripts the pre-tokenizer splits one character a word and the data checks
  count as CJK (a ``regex`` character-class body: Han, Hiragana, Katakana, Hangul);
- :func:`is_cjk_ideograph`: a CJK ideograph, exactly the ranges BERT's basic tokenizer splits off as a
  word (``_is_chinese_char``), which whole-word masking groups;
- :func:`needs_cjk_font`: a character the plots need a CJK font to draw (CJK symbols, kana, Han, Hangul).

:func:`load_jieba` is the one place the Chinese word segmenter is loaded (whole-word masking, raw
text split into jieba words).
"""

from __future__ import annotations

import re

from ..errors import ConfigError

CJK_SCRIPTS = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}"
IDEOGRAPH_CLASS = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]"  # CJK ideographs
_IDEOGRAPH = re.compile(IDEOGRAPH_CLASS)


def is_cjk_ideograph(text: str) -> bool:
    """True when ``text`` is one CJK ideograph (what BERT's normaliser always splits off as a word)."""
    return len(text) == 1 and bool(_IDEOGRAPH.match(text))


def needs_cjk_font(ch: str) -> bool:
    """True for a character a Latin font cannot draw: CJK symbols, kana and ideographs, Hangul."""
    code = ord(ch)
    return 0x2E80 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x3FFFF


def load_jieba(setting: str):
    """The jieba module, quiet; ``setting`` names the option that asked for it (for the error line)."""
    try:
        import jieba
    except ImportError:  # pragma: no cover - jieba is a dependency; an install without it gets a clear line
        raise ConfigError(f"{setting} jieba needs the jieba package (pip install jieba); "
                          f"or set {setting}: characters") from None
    jieba.setLogLevel(60)  # it logs its dictionary loading at INFO on every start
    return jieba
