"""Token classification's config sections: ``task`` options, ``data`` columns and scheme, ``encoding``."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from ...schema import DataConfig, EncodingConfig, TaskOptions


class TokenClassificationOptions(TaskOptions):
    type: str = "token_classification"
    decode: Literal["viterbi", "argmax"] = Field(
        default="viterbi", description="viterbi forbids invalid IOB2 transitions (O -> I-X)"
    )
    unannotated: Literal["mask", "o"] = Field(
        default="mask",
        description="entity types a sentence does not annotate (a continual stage's old types): 'mask' "
        "leaves them out of the loss of its O words; 'o' trains those words as plain O",
    )
    head_init: Literal["random", "prototypes"] = Field(
        default="random",
        description="prototypes: the head starts as the nearest-prototype classifier of the training "
                    "words' encoder vectors (few-shot; with training.epochs 0 it is that classifier)",
    )


class TokenClassificationData(DataConfig):
    FORMATS: ClassVar[tuple[str, ...]] = ("auto", "conll", "jsonl", "labelstudio", "doccano", "parquet", "arrow", "hf")
    token_column: int = 0
    tag_column: int = -1
    tokens_column: Optional[str] = Field(
        default=None, description="JSONL key / dataset column of the words (a list of strings); default: tokens or words")
    tags_column: Optional[str] = Field(
        default=None, description="JSONL key / dataset column of the tags (tag strings, or ClassLabel integers); "
                                  "default: tags or ner_tags")
    scheme: Literal["auto", "IOB2", "IOB1", "IO", "BIOES", "BILOU", "BMES", "BMEWO"] = "auto"  # readers.SCHEMES
    chinese_segmentation: Literal["characters", "jieba"] = Field(
        default="characters",
        description="how Chinese in raw text (predict, serve) is split into words: one character a word, as "
                    "character-level files (MSRA, Weibo, Resume) are; or jieba words, for a file of segmented words",
    )


class TokenClassificationEncoding(EncodingConfig):
    label_all_subwords: bool = False
    label_position: Literal["auto", "first", "last"] = Field(
        default="auto", description="sub-word a word is labelled on: auto = last for decoder models, else first"
    )
    unspaced_words: Literal["cjk", "all", "none"] = Field(
        default="cjk",
        description="words written with no space before them, which lose the lone word-start marker a "
                    "SentencePiece (▁) or byte-level BPE (Ġ) tokenizer puts before a word, so their label sits on "
                    "a piece that carries their text: cjk = words starting with a Chinese, Japanese or Korean "
                    "character; all = every word (a script without spaces); none = the tokenizer's own split",
    )
