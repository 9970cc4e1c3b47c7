"""mkdocs hook: links that leave docs/, and the README's links.

The pages link to repository files outside docs/ (`../benchmarks/RESULTS.md`, the plots under
`../benchmarks/`) with relative paths, which GitHub follows as they are. mkdocs only knows the files
under docs/, so it would report each of them as "not found", the same warning as a broken link
between two pages, and `--strict` would fail. This hook takes those links (and only those) off
mkdocs's hands and checks them itself:

- a relative link or image on a page whose target lies outside docs/ must name a file or folder that
  exists in the repository; a fragment on a Markdown target must be one of its headings' ids as GitHub
  makes them. Otherwise a warning, which `mkdocs build --strict` turns into a failed build. In the
  built site the link points at the same file in the checkout (relative to where the site was built);
- links between pages stay mkdocs's (`validation:` in mkdocs.yml, anchors included). Since GitHub
  renders the same pages, their fragments are checked against GitHub's heading ids here as well;
- README.md is not part of the site, so its relative links (to docs/ pages and their headings, to
  benchmarks/, examples/...) are checked here too, once per build.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mkdocs.plugins import get_plugin_logger

log = get_plugin_logger(__name__)

# The target of an inline link or image: `](target)` or `](target "title")`.
LINK = re.compile(r'\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
FENCE = re.compile(r"^\s*(```|~~~)")
PLACEHOLDER = "tuneforge-repo:"  # a scheme, so mkdocs's link validation leaves the link alone


def _outside_fences(markdown: str):
    """(line number, line) of every line outside fenced code blocks, with inline code blanked."""
    fence = None
    for number, line in enumerate(markdown.split("\n"), 1):
        m = FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        if fence is None:
            yield number, re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", lambda c: " " * len(c.group(0)), line)


def github_anchors(path: Path) -> set[str]:
    """The ids GitHub gives the headings of a Markdown file (lower case, punctuation dropped,
    each space a hyphen, repeats numbered -1, -2, ...)."""
    seen: dict[str, int] = {}
    ids = set()
    fence = None
    for line in path.read_text(encoding="utf-8").split("\n"):
        m = FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        h = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fence is not None or not h:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h.group(1)).replace("`", "").replace("*", "")
        text = unicodedata.normalize("NFC", text).lower()
        slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM").replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def _check(source: str, number: int, repo: Path, target: Path, fragment: str) -> bool:
    """Warn (and return False) when target is missing or lacks the heading fragment names."""
    try:
        rel = target.relative_to(repo)
    except ValueError:
        log.warning(f"{source}:{number}: the link to '{target}' leaves the repository")
        return False
    if not target.exists():
        log.warning(f"{source}:{number}: the link target '{rel.as_posix()}' does not exist")
        return False
    if fragment and target.suffix == ".md" and unquote(fragment) not in github_anchors(target):
        log.warning(f"{source}:{number}: '{rel.as_posix()}' has no heading '#{fragment}' (GitHub's heading ids)")
        return False
    return True


def _relative_targets(markdown: str):
    """(line number, path, fragment) of every relative link outside code."""
    for number, line in _outside_fences(markdown):
        for m in LINK.finditer(line):
            scheme, netloc, path, _query, fragment = urlsplit(m.group(1))
            if not scheme and not netloc and not path.startswith("/"):
                yield number, m.group(1), unquote(path), fragment


def on_page_markdown(markdown, page, config, files):
    docs = Path(config.docs_dir).resolve()
    repo = Path(config.config_file_path).resolve().parent
    page_path = (docs / page.file.src_uri).resolve()

    for number, url, path, fragment in _relative_targets(markdown):
        target = (page_path.parent / path).resolve() if path else page_path
        if target.is_relative_to(docs):  # a page or a self-link: mkdocs validates it; check GitHub's ids
            if fragment and target.suffix == ".md" and target.exists():
                _check(page.file.src_uri, number, repo, target, fragment)
            continue
        # Checked here (a warning if it fails), so taken out of mkdocs's validation either way.
        if _check(page.file.src_uri, number, repo, target, fragment) or target.is_relative_to(repo):
            rel = target.relative_to(repo).as_posix() + ("/" if target.is_dir() or path.endswith("/") else "")
            new = PLACEHOLDER + rel + (f"#{fragment}" if fragment else "")
            markdown = markdown.replace(f"]({url})", f"]({new})")
    return markdown


def on_page_content(html, page, config, files):
    """Placeholders become paths to the files in the checkout, relative to the built page."""
    repo = Path(config.config_file_path).resolve().parent
    page_dir = page.url if page.url.endswith("/") else posixpath.dirname(page.url)
    up = "../" * page_dir.count("/")
    to_repo = Path(os.path.relpath(repo, Path(config.site_dir).resolve())).as_posix()
    return html.replace(PLACEHOLDER, f"{up}{to_repo}/")


def on_post_build(config):
    """README.md is not part of the site: check its relative links here."""
    repo = Path(config.config_file_path).resolve().parent
    readme = repo / "README.md"
    if readme.exists():
        for number, _url, path, fragment in _relative_targets(readme.read_text(encoding="utf-8")):
            _check("README.md", number, repo, (repo / path).resolve() if path else readme, fragment)
