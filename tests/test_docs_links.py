"""The README and docs/ hold together: every relative link and image resolves (file and #anchor), the README stays
short enough for a newcomer, and every docs page is reachable from the README."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", flags=re.S)
README_MAX_LINES = 250


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(page: Path) -> set[str]:
    """The anchors of ``page``'s headings (outside code fences)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def relative_links(page: Path) -> list[str]:
    """The relative link targets of ``page`` (outside code fences)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in headings(destination):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_readme_is_short_and_reaches_every_docs_page() -> None:
    readme = REPO / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in relative_links(readme)}
    unreachable = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unreachable, f"docs pages the README does not link: {unreachable}"


def test_anchor_rule_matches_github() -> None:
    assert github_anchor("Paper, official code, defaults") == "paper-official-code-defaults"
    assert github_anchor("`gadms serve-model`: the champion over HTTP") == "gadms-serve-model-the-champion-over-http"
