"""Reading labelled data: CoNLL-style column files, JSONL, CSV/TSV, and (through :mod:`..hf_datasets`)
Parquet, Arrow and Hugging Face datasets; Label Studio and doccano through :mod:`..interchange`.

Every error names the file and line and says what to do (see :class:`tuneforge.errors.DataError`).
Tags are normalised to IOB2 on the way in (:func:`normalise_to_iob2`), and the number of tags
that had to change is reported, never hidden.

One module per kind of file, each importing only what is below it: :mod:`..records` (the example
records, a file's lines, malformed records, the pre-tokenizer, splitting) and :mod:`..tags` (tag
schemes) at the bottom; :mod:`.tokens` (CoNLL, token JSONL), :mod:`.texts` (CSV, TSV, text JSONL),
:mod:`.documents` (raw text for language modelling) above them; :mod:`.formats` (the entry points that
pick a reader by format, Parquet / Arrow / ``hf:`` and Label Studio / doccano included) on top. This
package re-exports the public names of all of them.
"""

from ..records import (
    PRETOKENIZER_PATTERN,
    ChatExample,
    TextExample,
    TokenExample,
    collect_bad_records,
    join_words,
    pretokenize,
    split_examples,
)
from ..tags import (
    BEGIN,
    END,
    INSIDE,
    SCHEMES,
    SINGLE,
    SchemeReport,
    check_known_tags,
    check_trainable_labels,
    detect_scheme,
    normalise_to_iob2,
    parse_tag,
    split_tag,
)
from .chat import CHAT_FORMATS, ROLE_NAMES, check_conversation, read_conversations, read_prompts
from .documents import DOCUMENT_SUFFIXES, DocumentReport, document_files, read_documents
from .formats import detect_format, detect_text_format, read_text_file, read_token_file, write_text_file
from .texts import TEXT_FORMATS, check_known_labels, read_text_jsonl, read_text_table
from .tokens import DOCSTART, examples_from_texts, read_conll, read_jsonl, read_text_lines, write_conll, write_token_jsonl

__all__ = [
    "BEGIN", "CHAT_FORMATS", "ROLE_NAMES", "ChatExample", "check_conversation", "read_conversations", "read_prompts",
    "DOCSTART", "DOCUMENT_SUFFIXES", "END", "INSIDE", "PRETOKENIZER_PATTERN", "SCHEMES", "SINGLE",
    "TEXT_FORMATS", "DocumentReport", "SchemeReport", "TextExample", "TokenExample", "check_known_labels",
    "check_known_tags", "check_trainable_labels", "collect_bad_records", "detect_format", "detect_scheme",
    "detect_text_format", "document_files", "examples_from_texts", "join_words", "normalise_to_iob2", "parse_tag",
    "pretokenize", "read_conll", "read_documents", "read_jsonl", "read_text_file", "read_text_jsonl",
    "read_text_lines", "read_text_table", "read_token_file", "split_examples", "split_tag", "write_conll",
    "write_text_file", "write_token_jsonl",
]
