"""The documentation holds together: every Markdown link in README.md and docs/*.md resolves
inside the repository, the README stays a front door, and no page of docs/ is unreachable.

A link is broken when it points outside the repository (``../shared/DESIGN.md``), at a file
that does not exist, or at an ``#anchor`` that is no heading of its target, by GitHub's slug
rules. External links (http, https, mailto) are allowed and not fetched; links inside code
blocks and inline code are not links. The checks below run on the repository, and the
``test_checker_*`` tests run them on small made-up trees, so that each check is seen to fail.
"""

import re
from pathlib import Path

import pytest
from support import REPO

README_MAX_LINES = 200

LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s{0,3}(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
EXTERNAL = ("http://", "https://", "mailto:")


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (code blocks become empty lines, so that line
    numbers stay right)."""
    lines, fenced = [], None
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and (fenced is None or fence.group(1) == fenced):
            fenced = None if fenced else fence.group(1)
            lines.append("")
            continue
        lines.append("" if fenced else line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed (letters,
    digits, underscores, hyphens and spaces stay), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings; a repeated heading gets ``-1``, ``-2`` ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """``(line number, target)`` of every link, image and reference definition."""
    found = []
    for number, line in enumerate(prose_lines(path.read_text(encoding="utf-8")), start=1):
        line = INLINE_CODE.sub("", line)
        for pattern in (LINK, IMAGE, REFERENCE):
            found += [(number, m.group(1)) for m in pattern.finditer(line)]
    return found


def resolve(source: Path, target: str) -> Path | None:
    """The file a relative link points at (the source itself for ``#anchor``); None for an
    external link."""
    if SCHEME.match(target):
        return None
    file_part = target.partition("#")[0]
    return (source.parent / file_part).resolve() if file_part else source


def broken_links(root: Path) -> list[str]:
    """One line per broken link of README.md and docs/*.md under ``root``."""
    root = root.resolve()
    problems = []
    for source in doc_files(root):
        if not source.is_file():
            problems.append(f"{source.relative_to(root)}: missing")
            continue
        for number, target in links(source):
            where = f"{source.relative_to(root)}:{number}: {target}"
            resolved = resolve(source, target)
            if resolved is None:
                if not target.startswith(EXTERNAL):
                    problems.append(f"{where}: unexpected scheme")
                continue
            if resolved != root and root not in resolved.parents:
                problems.append(f"{where}: points outside the repository")
                continue
            if not resolved.exists():
                problems.append(f"{where}: no such file {resolved.relative_to(root)}")
                continue
            anchor = target.partition("#")[2]
            if anchor:
                if resolved.is_dir() or resolved.suffix.lower() != ".md":
                    problems.append(f"{where}: an anchor on a file that is not Markdown")
                elif anchor not in anchors(resolved):
                    problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


def unlinked_docs(root: Path) -> list[str]:
    """The pages of docs/ that neither README.md nor another page of docs/ links to."""
    root = root.resolve()
    linked = set()
    for source in doc_files(root):
        if source.is_file():
            for _, target in links(source):
                resolved = resolve(source, target)
                if resolved is not None and resolved != source:
                    linked.add(resolved)
    return [str(page.relative_to(root)) for page in doc_files(root)[1:] if page.resolve() not in linked]


def readme_too_long(root: Path) -> str | None:
    """Why README.md is no longer a front door (more than ``README_MAX_LINES`` lines), or None."""
    count = len((root / "README.md").read_text(encoding="utf-8").splitlines())
    if count > README_MAX_LINES:
        return f"README.md has {count} lines, more than {README_MAX_LINES}: move the detail to docs/"
    return None


# ----------------------------------------------------------------------------- the repository


def test_every_link_resolves_inside_the_repository():
    assert broken_links(REPO) == []


def test_readme_stays_a_front_door():
    assert readme_too_long(REPO) is None


def test_every_page_of_docs_is_linked_from_the_readme_or_another_page():
    assert len(doc_files(REPO)) > 2  # the check actually sees docs/
    assert unlinked_docs(REPO) == []


# ----------------------------------------------------------------------------- the checks can fail


@pytest.fixture
def tree(tmp_path: Path):
    """A tiny repository: README.md links docs/a.md, which links back; ``write`` adds files."""

    def write(path: str, text: str) -> Path:
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
        return file

    write("README.md", "# Project\n\nSee [a](docs/a.md#the-part).\n")
    write("docs/a.md", "# A\n\n## The part\n\nBack to the [README](../README.md).\n")
    write.root = tmp_path
    return write


def test_checker_passes_a_sound_tree(tree):
    assert broken_links(tree.root) == [] and unlinked_docs(tree.root) == []


@pytest.mark.parametrize(("link", "problem"), [
    ("docs/absent.md", "no such file docs/absent.md"),
    ("docs/A.md", "no such file docs/A.md"),  # GitHub is case-sensitive
    ("docs/a.md#no-such-part", "no heading #no-such-part in docs/a.md"),
    ("#nowhere", "no heading #nowhere in README.md"),
    ("../shared/DESIGN.md", "points outside the repository"),
    ("/etc/passwd", "points outside the repository"),
    ("docs/#x", "an anchor on a file that is not Markdown"),
    ("file:///etc/passwd", "unexpected scheme"),
])
def test_checker_reports_a_broken_link(tree, link, problem):
    tree("README.md", f"# Project\n\nSee [a](docs/a.md) and [this]({link}).\n")
    assert broken_links(tree.root) == [f"README.md:3: {link}: {problem}"]


def test_checker_reports_broken_images_and_reference_links_in_docs(tree):
    tree("docs/a.md", "# A\n\n## The part\n\n![plot](plot.png)\n\n[ref]: ../README.md#gone\n\n[README](../README.md)\n")
    assert broken_links(tree.root) == ["docs/a.md:5: plot.png: no such file docs/plot.png",
                                       "docs/a.md:7: ../README.md#gone: no heading #gone in README.md"]


def test_checker_ignores_code_and_external_links(tree):
    tree("docs/a.md", "# The part\n\n```md\n[x](gone.md)\n```\n\nInline `[x](gone.md)`, "
                      "[site](https://example.com/x#y), [README](../README.md#project).\n")
    assert broken_links(tree.root) == []


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Where a /predict request goes", "where-a-predict-request-goes"),
    ("Checkpoint (training state, resumable)", "checkpoint-training-state-resumable"),
    ("Versions, promotion and rollback", "versions-promotion-and-rollback"),
    ("The `--once` flag", "the---once-flag"),
    ("**Bold** and [a link](x.md)", "bold-and-a-link"),
    ("Exit codes of `--once`", "exit-codes-of---once"),
    ("snake_case stays", "snake_case-stays"),
])
def test_slugs_follow_githubs_rules(heading, anchor):
    assert slug(heading) == anchor


def test_a_repeated_heading_gets_a_numbered_anchor(tree):
    page = tree("docs/a.md", "# A\n\n## Notes\n\n## Notes\n\n[README](../README.md)\n")
    assert {"notes", "notes-1"} <= anchors(page)


def test_checker_reports_a_readme_grown_past_a_front_door(tree):
    body = "".join(f"line {n}\n" for n in range(README_MAX_LINES - 3))
    tree("README.md", f"# Project\n\nSee [a](docs/a.md).\n{body}")
    assert readme_too_long(tree.root) is None  # exactly README_MAX_LINES
    tree("README.md", f"# Project\n\nSee [a](docs/a.md).\n{body}one more\n")
    assert readme_too_long(tree.root) == (f"README.md has {README_MAX_LINES + 1} lines, more than "
                                          f"{README_MAX_LINES}: move the detail to docs/")


def test_checker_reports_a_page_nobody_links_to(tree):
    tree("docs/orphan.md", "# Orphan\n\nLinks out to the [README](../README.md), but nobody links here.\n")
    assert unlinked_docs(tree.root) == ["docs/orphan.md"]
    tree("docs/a.md", "# A\n\n## The part\n\nSee the [orphan](orphan.md).\n")
    assert unlinked_docs(tree.root) == []  # a link from another page counts


def test_a_page_linking_only_itself_counts_as_unlinked(tree):
    tree("docs/self.md", "# Self\n\n## Part\n\n[here](#part), [again](self.md).\n")
    assert unlinked_docs(tree.root) == ["docs/self.md"]
