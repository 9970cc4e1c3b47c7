"""The ``tuneforge data check`` report as files: ``report.json`` (the report without its in-memory-only
keys) and ``report.html``, one self-contained page (no script, no external file) whose every number
carries its place in the JSON (``data-key``), with the plots given as inline PNG data URIs (drawn by
:mod:`tuneforge.workflows.checks`)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

from ..artifacts.paths import atomic_write_text


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else html.escape(str(value))


def _cell(report: dict, *path) -> str:
    """A table cell holding the number at ``path`` in the report, tagged (``data-key``: the path as JSON)
    so a test can check every number on the page against the JSON."""
    value: Any = report
    for part in path:
        value = value[part]
    key = html.escape(json.dumps(list(path), ensure_ascii=False))
    return f'<td class="num" data-key="{key}">{_fmt(value)}</td>'


def _esc(text) -> str:
    """Escaped text; a list (labels, tags) as its items joined, not Python's repr."""
    if isinstance(text, (list, tuple)):
        text = ", ".join(str(t) for t in text)
    return html.escape(str(text))


def _where(where: str) -> str:
    """A FILE:LINE cell: the file's name and the line, the full path as the cell's title (the files are
    named in full once, at the top of the page)."""
    path, sep, line = str(where).rpartition(":")
    if not sep or not line.isdigit():
        return f"<td>{_esc(where)}</td>"
    return f"<td title='{_esc(path)}'>{_esc(Path(path).name)}:{line}</td>"


def _examples(rows: list, cols: Sequence[str]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_where(r.get(c, '')) if c == "where" else f"<td>{_esc(r.get(c, ''))}</td>"
                                    for c in cols) + "</tr>" for r in rows)
    return f"<table class='ex'><tr>{head}</tr>{body}</table>"


def _pairs(pairs: list) -> str:
    if not pairs:
        return ""
    rows = []
    for p in pairs:
        a, b = p[0], p[1]
        score = f"<td class='num'>{p[2]}</td>" if len(p) > 2 else "<td></td>"
        rows.append(f"<tr>{_where(a['where'])}<td>{_esc(a['text'])}</td>{_where(b['where'])}"
                    f"<td>{_esc(b['text'])}</td>{score}</tr>")
    return ("<table class='ex'><tr><th>where</th><th>text</th><th>where</th><th>text</th><th>Jaccard</th></tr>"
            + "".join(rows) + "</table>")


def render_html(report: dict, plots: dict[str, str]) -> str:
    """One self-contained page: no script, no external file; ``plots`` (name -> PNG data URI) are inline."""
    splits = report["splits"]
    parts = [f"<h1>Data check: {_esc(report['task'].replace('_', ' '))}</h1>",
             "<p>" + " · ".join(f"{_esc(k)}: <code>{_esc(v)}</code>" for k, v in report["files"].items()) + "</p>"]
    parts.append("<h2>Findings</h2>" + ("<ul>" + "".join(f"<li>{_esc(f)}</li>" for f in report["findings"]) + "</ul>"
                                        if report["findings"] else "<p>Nothing to report.</p>"))
    head = "<tr><th></th>" + "".join(f"<th>{_esc(s)}</th>" for s in splits) + "</tr>"
    rows = "".join(f"<tr><th>{key}</th>" + "".join(_cell(report, "sizes", s, key) for s in splits) + "</tr>"
                   for key in ("examples", "malformed", "empty", "words", "characters"))
    parts.append(f"<h2>Sizes</h2><table>{head}{rows}</table>")
    for name, errors in report["malformed"].items():
        parts.append(f"<h3>Malformed records in {_esc(name)}</h3><ul>" + "".join(f"<li><code>{_esc(e)}</code></li>" for e in errors) + "</ul>")
    labels = list(dict.fromkeys(l for c in report["labels"]["per_split"].values() for l in c))
    rows = "".join("<tr><th>" + _esc(l) + "</th>" + "".join(
        _cell(report, "labels", "per_split", s, l) if l in report["labels"]["per_split"][s] else "<td class='num'>0</td>"
        for s in splits) + "</tr>" for l in labels)
    parts.append(f"<h2>Labels</h2><table>{head}{rows}</table>")
    if "labels" in plots:
        parts.append(f"<img alt='label distribution' src='{plots['labels']}'>")
    if report["scheme"]:
        rows = "".join(f"<tr><th>{_esc(s)}</th><td>{_esc(v['read_as'])}</td>{_cell(report, 'scheme', s, 'rewritten')}"
                       f"<td>{'<br>'.join(_esc(x) for x in v['examples'])}</td></tr>" for s, v in report["scheme"].items())
        parts.append("<h2>Tag scheme</h2><table><tr><th></th><th>read as</th><th>tags rewritten to IOB2</th>"
                     f"<th>examples</th></tr>{rows}</table>")
    dup = report["duplicates"]
    parts.append(f"<h2>Duplicates and leakage</h2><p class='small'>{_esc(dup['method'])}</p>")
    keys = ("exact_groups", "exact_extra_copies", "conflicting_labels", "normalised_groups", "normalised_extra_copies",
            "near_pairs")
    rows = "".join(f"<tr><th>{k.replace('_', ' ')}</th>" + "".join(_cell(report, "duplicates", "within", s, k) for s in splits)
                   + "</tr>" for k in keys)
    parts.append(f"<h3>Within a split</h3><table>{head}{rows}</table>")
    for s in splits:
        entry = dup["within"][s]
        for title, key in (("exact copies", "exact_examples"), ("normalised copies", "normalised_examples")):
            if entry[key]:
                parts.append(f"<h4>{_esc(s)}: {title}</h4>" + "".join(_examples(g, ("where", "text")) for g in entry[key]))
        if entry["conflict_examples"]:
            parts.append(f"<h4>{_esc(s)}: same text, different labels</h4>"
                         + "".join(_examples(g, ("where", "text", "labels")) for g in entry["conflict_examples"]))
        if entry["near_examples"]:
            parts.append(f"<h4>{_esc(s)}: near pairs</h4>" + _pairs(entry["near_examples"]))
    if dup["across"]:
        rows = "".join(f"<tr><th>{_esc(n)}</th>" + "".join(_cell(report, "duplicates", "across", n, k)
                                                          for k in ("exact", "normalised", "near")) + "</tr>"
                       for n in dup["across"])
        parts.append("<h3>Across splits (leakage)</h3><p class='small'>Counts are examples of the second split with a "
                     "copy in the first.</p><table><tr><th></th><th>exact</th><th>normalised</th><th>near</th></tr>"
                     f"{rows}</table>")
        for n, entry in dup["across"].items():
            for title, key in (("exact", "exact_pairs"), ("normalised", "normalised_pairs"), ("near", "near_pairs")):
                if entry[key]:
                    parts.append(f"<h4>{_esc(n)}: {title}</h4>" + _pairs(entry[key]))
    rows = "".join(f"<tr><th>{unit} {stat}</th>" + "".join(_cell(report, "lengths", s, unit, stat) for s in splits)
                   + "</tr>" for unit in ("words", "characters") for stat in ("median", "p95", "max"))
    parts.append(f"<h2>Lengths</h2><table>{head}{rows}</table>")
    tok = report.get("tokenizer")
    if tok:
        parts.append(f"<h2>Tokenizer: <code>{_esc(tok['name'])}</code></h2>"
                     f"<p>Inputs over max_length {report['max_length']}: {_esc(report['long_inputs'])}.</p>")
        rows = "".join(f"<tr><th>{label}</th>" + "".join(_cell(report, "tokenizer", "splits", s, *key.split(".")) for s in splits)
                       + "</tr>" for label, key in (
                           ("sub-words median", "subwords.median"), ("sub-words p95", "subwords.p95"),
                           ("sub-words p99", "subwords.p99"), ("sub-words max", "subwords.max"),
                           (f"over max_length {report['max_length']}", "over_max_length"), ("tokens", "tokens"),
                           ("sub-words a word", "tokens_per_word"),
                           (f"{tok['unknown_token']} tokens", "unknown"), (f"{tok['unknown_token']} rate", "unknown_rate"),
                           (f"texts with {tok['unknown_token']}", "texts_with_unknown")))
        parts.append(f"<table>{head}{rows}</table>")
        if "lengths" in plots:
            parts.append(f"<img alt='sub-word lengths' src='{plots['lengths']}'>")
        for s in splits:
            words = tok["splits"][s]["top_unknown_words"]
            if words:
                parts.append(f"<p>{_esc(s)}: words behind {_esc(tok['unknown_token'])}: "
                             + ", ".join(f"<code>{_esc(w)}</code> ({n})" for w, n in words) + "</p>")
            longest = tok["splits"][s]["over_max_length_examples"]
            if longest:
                parts.append(f"<h4>{_esc(s)}: longest inputs</h4>" + _examples(longest, ("where", "subwords", "text")))
    else:
        parts.append("<h2>Tokenizer</h2><p>No tokenizer given (<code>--tokenizer NAME_OR_PATH</code>, a config or "
                     "<code>--model RUN</code>): sub-word lengths and coverage not measured.</p>")
    keys = ("characters", "cjk_share", "latin_share", "digit_share", "punctuation_share", "emoji_share", "other_share",
            "texts_with_url", "texts_with_emoji", "texts_with_mention", "texts_with_control_or_zero_width",
            "texts_with_html_entities")
    rows = "".join(f"<tr><th>{k.replace('_', ' ')}</th>" + "".join(_cell(report, "characters", s, k) for s in splits)
                   + "</tr>" for k in keys)
    parts.append(f"<h2>Characters</h2><table>{head}{rows}</table><img alt='character classes' src='{plots['characters']}'>")
    noise = report.get("noise")
    if noise:
        parts.append(f"<h2>Label noise candidates</h2><p class='small'>{_esc(noise['method'])}</p><table>"
                     f"<tr><th>examples checked</th>{_cell(report, 'noise', 'examples_checked')}</tr>"
                     f"<tr><th>candidates</th>{_cell(report, 'noise', 'candidates')}</tr>"
                     f"<tr><th>units flagged</th>{_cell(report, 'noise', 'units_flagged')}</tr></table>")
        rows = [{"where": c["where"], "text": c["text"],
                 "disputed": "; ".join(f"{u['unit']}: {u['gold']} → {u['predicted']} ({u['probability']})" for u in c["units"][:5])}
                for c in noise["examples"]]
        parts.append(_examples(rows, ("where", "disputed", "text")))
    style = ("body{font-family:'Noto Sans',Arial,'Noto Sans CJK SC',sans-serif;margin:24px;max-width:1150px;color:#222}"
             "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left;vertical-align:top;font-size:13px}td.num{text-align:right;font-variant-numeric:tabular-nums}"
             "table.ex td{max-width:520px;word-break:break-word}.small{color:#555;font-size:12px}img{max-width:100%}"
             "h2{border-bottom:2px solid #ddd;padding-bottom:2px;margin-top:28px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>tuneforge data check</title><style>{style}</style>"
            "</head><body>" + "\n".join(parts) + "</body></html>\n")


def public_report(node):
    """The report without in-memory-only keys (leading underscore)."""
    if isinstance(node, dict):
        return {k: public_report(v) for k, v in node.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(node, list):
        return [public_report(v) for v in node]
    return node


def write_report(report: dict, out_dir: str | Path, plots: dict[str, str]) -> dict[str, Path]:
    out_dir = Path(out_dir)
    files = {"json": out_dir / "report.json", "html": out_dir / "report.html"}
    page = render_html(report, plots)
    atomic_write_text(files["json"], json.dumps(public_report(report), ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(files["html"], page)
    return files
