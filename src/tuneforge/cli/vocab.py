"""`tuneforge vocab extend|stats`: measure a tokenizer on text, extend its vocabulary."""

from __future__ import annotations

from pathlib import Path

from ..artifacts.paths import check_output_path
from ..data.readers import read_documents, read_token_file
from ..data.vocab import extend_vocabulary, format_stats_table, token_stats
from ..errors import TuneforgeError
from ..runtime.models import load_tokenizer


def _vocab_text_sets(args) -> dict:
    """``--corpus`` (raw text) and ``--labelled`` (CoNLL / token JSONL, words read as the NER task reads them)."""

    sets = {}
    if args.corpus:
        sets["corpus"] = [d.text for d in read_documents(args.corpus, text_key=args.text_column)]
    for path in args.labelled or []:
        sets[Path(path).name] = [ex.words for ex in read_token_file(path, tag_column=None)]
    return sets


def _cmd_vocab_extend(args) -> int:
    out = check_output_path(args.out, "--out", folder=True)
    if out.exists() and any(out.iterdir()):
        raise TuneforgeError(f"{out}: output folder is not empty; choose a new folder")
    sets = _vocab_text_sets(args)
    corpus = sets.pop("corpus")
    result = extend_vocabulary(
        args.model, corpus, args.add, out, reports=sets, kinds=args.kinds, min_count=args.min_count,
        min_pieces=args.min_pieces, init=args.init, noise_std=args.noise_std, seed=args.seed,
    )
    print(result.describe())
    return 0


def _cmd_vocab_stats(args) -> int:
    if not args.corpus and not args.labelled:
        raise TuneforgeError("vocab stats: give --corpus and/or --labelled files to measure")
    tokenizer = load_tokenizer(args.model)
    print(format_stats_table({name: {"before": token_stats(tokenizer, texts).as_dict()}
                              for name, texts in _vocab_text_sets(args).items()}))
    return 0


def add_parsers(sub) -> None:
    """``vocab extend`` and ``vocab stats``."""

    vocab = sub.add_parser("vocab", help="measure a tokenizer on text, extend its vocabulary").add_subparsers(
        dest="vocab_command", required=True)
    p = vocab.add_parser("extend", help="add the characters/words a corpus needs most; resize and initialise embeddings")
    p.add_argument("--model", required=True, help="base model: hub name, folder or pkg:PACKAGE/path")
    p.add_argument("--corpus", required=True, nargs="+", help="raw text: .txt (one document a line), .jsonl, folders")
    p.add_argument("--add", required=True, type=int, help="how many entries to add at most")
    p.add_argument("--out", required=True, help="folder for the extended model, tokenizer and vocab_extension.json")
    p.add_argument("--labelled", nargs="*", help="CoNLL / token JSONL files to report [UNK] rate and pieces per char on")
    p.add_argument("--kinds", default="both", choices=["characters", "words", "both"])
    p.add_argument("--min-count", type=int, default=2, help="ignore candidates seen fewer times")
    p.add_argument("--min-pieces", type=int, default=3, help="a word is a candidate from this many pieces on")
    p.add_argument("--init", default="pieces", choices=["pieces", "mean"],
                   help="new rows: mean of the old pieces (else the mean row), or the mean row")
    p.add_argument("--noise-std", type=float, default=0.01, help="Gaussian noise added to each new row")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--text-column", default="text", help="the text key of .jsonl corpus files")
    p.set_defaults(func=_cmd_vocab_extend)
    p = vocab.add_parser("stats", help="[UNK] rate and pieces per character of a tokenizer on some text")
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", nargs="*", help="raw text: .txt (one document a line), .jsonl, folders")
    p.add_argument("--labelled", nargs="*", help="CoNLL / token JSONL files")
    p.add_argument("--text-column", default="text")
    p.set_defaults(func=_cmd_vocab_stats)
