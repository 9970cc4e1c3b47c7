"""tuneforge data check: duplicates and leakage on constructed cases, malformed records, --strict,
the HTML page's numbers equal the JSON's, both tasks, tokenizer coverage."""

import json
from html.parser import HTMLParser

import pytest

from tuneforge.cli import main
from tuneforge.data.checks import jaccard, normalise_text, shingles

from conftest import write_conll

LONG = "john smith said the city of paris was new and london was the city he visited today with mary"
TRAIN = [
    ("john smith lives in new york", "B-PER I-PER O O B-LOC I-LOC"),
    ("john smith lives in new york", "B-PER I-PER O O B-LOC I-LOC"),  # an exact copy
    ("john smith lives in new york", "B-PER I-PER O O O O"),  # a copy with other labels: a conflict
    ("mary visited paris today", "B-PER O B-LOC O"),
    ("google and apple met in london", "B-ORG O B-ORG O O B-LOC"),
    (LONG, "B-PER I-PER O O O O B-LOC O O O B-LOC O O O O O O O B-PER"),
]
TEST = [
    ("mary visited paris today", "B-PER O B-LOC O"),  # exact leak
    ("Google and Apple met in London !", "B-ORG O B-ORG O O B-LOC O"),  # the same after normalising
    (LONG.replace("visited", "visits"), "B-PER I-PER O O O O B-LOC O O O B-LOC O O O O O O O B-PER"),  # near
    ("she works at microsoft in berlin", "O O O B-ORG O B-LOC"),  # clean
]


class Cells(HTMLParser):
    """Every <td data-key=...> with its text."""

    def __init__(self):
        super().__init__()
        self.cells, self._key = [], None

    def handle_starttag(self, tag, attrs):
        self._key = dict(attrs).get("data-key") if tag == "td" else None
        self._text = ""

    def handle_data(self, data):
        if self._key is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._key is not None:
            self.cells.append((json.loads(self._key), self._text))
            self._key = None


def shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def run_check(tmp_path, *args):
    out = tmp_path / "report"
    code = main(["data", "check", *map(str, args), "--out", str(out)])
    return code, json.loads((out / "report.json").read_text()), (out / "report.html").read_text()


def test_near_duplicate_measures():
    assert normalise_text("RT @bob: Visit https://x.co/1 NOW!!! 2024") == "rt@uservisiturlnow0000".replace("@", "")
    assert jaccard(shingles("abcdefg"), shingles("abcdefg")) == 1.0
    assert jaccard(shingles("abcdefgh"), shingles("abcdefgx")) == pytest.approx(3 / 5)


def test_duplicates_and_leakage_on_constructed_data(tmp_path, capsys):
    train = write_conll(tmp_path / "train.conll", TRAIN)
    test = write_conll(tmp_path / "test.conll", TEST)
    code, report, page = run_check(tmp_path, f"train={train}", f"test={test}")
    assert code == 0
    within = report["duplicates"]["within"]["train"]
    assert (within["exact_groups"], within["exact_extra_copies"], within["conflicting_labels"]) == (1, 2, 1)
    across = report["duplicates"]["across"]["train/test"]
    assert (across["exact"], across["normalised"], across["near"]) == (1, 1, 1)
    assert [(p[0]["where"], p[1]["where"]) for p in across["exact_pairs"]] == [(f"{train}:22", f"{test}:1")]
    # the page names each file in full once (and in the title of its cells), the rows by name:line
    assert f"<td title='{train}'>train.conll:22</td>" in page and f"<td title='{test}'>test.conll:1</td>" in page
    assert page.count(f">{train}:") == 0 and "['" not in page  # no full path in a cell, no list repr
    assert across["normalised_pairs"][0][1]["text"] == "Google and Apple met in London !"
    near = across["near_pairs"][0]
    assert near[0]["text"] == LONG and 0.8 <= near[2] < 1.0
    assert report["leakage"] == {"train/test": 2}
    assert report["sizes"]["train"]["examples"] == 6 and report["sizes"]["test"]["examples"] == 4
    assert report["labels"]["per_split"]["train"] == {"PER": 6, "LOC": 6, "ORG": 2}
    assert any(line.startswith("leakage train/test: 1 test example(s)") for line in report["findings"])
    # --strict fails on the leak
    capsys.readouterr()
    assert main(["data", "check", f"train={train}", f"test={test}", "--out", str(tmp_path / "r2"), "--strict"]) == 1
    assert "strict: 2 test example(s) leaked from train" in capsys.readouterr().err


def test_html_numbers_equal_the_json(tmp_path):
    train = write_conll(tmp_path / "train.conll", TRAIN)
    test = write_conll(tmp_path / "test.conll", TEST)
    _, report, page = run_check(tmp_path, f"train={train}", f"test={test}")
    parser = Cells()
    parser.feed(page)
    assert len(parser.cells) > 60
    for path, text in parser.cells:
        value = report
        for part in path:
            value = value[part]
        assert text == shown(value), path
    assert "<script" not in page and "src='http" not in page and page.count("data:image/png;base64,") >= 2


def test_malformed_records_are_all_counted(tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("john\tB-PER\nsmith\tI-PER\textra\n\nparis\tX-LOC\n\nmary\tB-PER\n\nberlin\t\n")
    code, report, _ = run_check(tmp_path, bad)
    assert code == 1 and report["sizes"]["train"]["malformed"] == 3  # errors fail the gate without --strict (issue 30)
    assert [m.split(":")[1] for m in report["malformed"]["train"]] == ["2", "8", "4"]
    assert main(["data", "check", str(bad), "--out", str(tmp_path / "r2"), "--strict"]) == 1
    assert "3 malformed record(s)" in capsys.readouterr().err


def test_text_classification_and_tokenizer_coverage(tmp_path, tiny_bert):
    data = tmp_path / "reviews.csv"
    data.write_text("text,label\nthe city was new,positive\nthe city was new,negative\n"
                    "我爱北京 and 猫 猫,positive\nvisit https://x.co now 😀,neutral\n"
                    + "the new city of paris is in the city of paris in the city of paris,positive\n")
    code, report, page = run_check(tmp_path, data, "--tokenizer", tiny_bert, "--max-length", "12")
    assert code == 0 and report["task"] == "text_classification"
    assert report["labels"]["per_split"]["train"] == {"positive": 3, "negative": 1, "neutral": 1}
    assert report["duplicates"]["within"]["train"]["conflicting_labels"] == 1
    tok = report["tokenizer"]["splits"]["train"]
    assert tok["unknown"] == 2 and dict(tok["top_unknown_words"]) == {"猫": 2, "😀": 1} or tok["unknown"] == 3
    from transformers import AutoTokenizer

    texts = [line.rsplit(",", 1)[0] for line in data.read_text(encoding="utf-8").splitlines()[1:]]
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    assert tok["over_max_length"] == sum(len(tokenizer(t)["input_ids"]) > 12 for t in texts) == 2
    chars = report["characters"]["train"]
    assert chars["texts_with_url"] == 1 and chars["texts_with_emoji"] == 1 and chars["cjk_share"] > 0
    assert "cut to max_length" not in report["long_inputs"]  # classifiers read long texts in windows by default


def test_label_noise_candidates(tmp_path, tiny_bert):
    """A word tagged against every other occurrence of it is the candidate a held-out model disputes."""
    sentences = [("mary visited paris today", "B-PER O B-LOC O"), ("john went to paris", "B-PER O O B-LOC"),
                 ("she lives in paris", "O O O B-LOC"), ("he met mary in paris", "O O B-PER O B-LOC")] * 3
    sentences[5] = ("john went to paris", "B-PER O O O")  # paris left untagged once
    data = write_conll(tmp_path / "data.conll", sentences)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(json.dumps({
        "model": {"name_or_path": str(tiny_bert)}, "data": {"train": str(data)},
        "encoding": {"max_length": 32, "stride": 8},
        "training": {"epochs": 25, "batch_size": 4, "learning_rate": 5e-3, "warmup_ratio": 0.0, "seed": 3,
                     "progress": False}}))
    (run / "model").mkdir()
    (run / "model" / "tuneforge.json").write_text("{}")
    (run / "model" / "vocab.txt").write_text((tiny_bert / "vocab.txt").read_text())
    code, report, page = run_check(tmp_path, data, "--model", run, "--folds", "2", "--noise-threshold", "0.5",
                                   "--tokenizer", tiny_bert)
    noise = report["noise"]
    assert noise["examples_checked"] == 12 and noise["units_checked"] == 12 * 4 + 3
    flagged = [(c["where"], u["unit"], u["gold"], u["predicted"]) for c in noise["examples"] for u in c["units"]]
    assert (f"{data}:27", "paris", "O", "B-LOC") in flagged  # the sixth sentence starts on line 27
    assert "Label noise candidates" in page


def test_a_chinese_conll_file_counts_its_characters_as_words(tmp_path, tiny_bert):
    """MSRA-style files hold one character a line: sizes, lengths and the words behind [UNK] are those
    characters, not the runs between spaces of the joined sentence (one 'word' a sentence)."""
    data = write_conll(tmp_path / "zh.conll", [("我 爱 北 京", "O O B-LOC I-LOC"), ("猫 在 john", "O O B-PER")])
    code, report, _ = run_check(tmp_path, data, "--tokenizer", tiny_bert)
    assert code == 0
    assert report["sizes"]["train"]["words"] == 7
    assert report["lengths"]["train"]["words"]["max"] == 4 and report["lengths"]["train"]["words"]["min"] == 3
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    unknown = {ch for ch in "我爱北京猫在" if tokenizer.unk_token_id in tokenizer(ch, add_special_tokens=False)["input_ids"]}
    assert unknown  # the tiny vocabulary has no CJK characters
    assert {w for w, _ in report["tokenizer"]["splits"]["train"]["top_unknown_words"]} == unknown


def test_html_entities_left_in_scraped_text_are_counted_and_reported(tmp_path):
    data = tmp_path / "tweets.csv"
    data.write_text('text,label\nfish &amp; chips &lt;3,positive\n&quot;no&quot; she said,negative\n'
                    "AT&T; is fine & so am I,neutral\nemoji &#128512; here,positive\n")
    code, report, page = run_check(tmp_path, data)
    assert code == 0 and report["characters"]["train"]["texts_with_html_entities"] == 3  # "AT&T;" is no escape
    assert "HTML entities in train: 3 text(s) hold escapes such as &quot; or &amp;" in "\n".join(report["findings"])
