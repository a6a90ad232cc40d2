"""The README and docs/ stay true to the tree (issue 21), with no training (seconds):

* every relative Markdown link or image in README.md and docs/**/*.md resolves to an existing file or
  folder, and a `#anchor` into a Markdown file (or within one) names one of its headings;
* every `python -m <module>` they name can be run that way (a module with a `__main__` guard, or a
  package with a `__main__` module);
* every `make <target>` they name is a target of the Makefile;
* the README's first commands are `make run` and `make test` (CI runs the README's test command).

Commands are read from code only (fenced blocks, with `#` comments stripped, and inline code spans);
links from the prose around them (a link inside code is not a link).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)((?:(?!\n\s*\n).)+?)\1", re.DOTALL)  # may wrap lines, never a paragraph break
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
HTML_ANCHOR = re.compile(r"""<a\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, ...
PYTHON_M = re.compile(r"(?:\bpython[0-9.]*|\btorchrun\b[^\n]*?)\s+-m\s+([A-Za-z_][\w.]*)")
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+((?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*)([A-Za-z0-9][\w.-]*)")
MAIN_GUARD = re.compile(r"""__name__\s*==\s*["']__main__["']""")


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ------------------------------------------------------------------------------------------------
# Reading Markdown
# ------------------------------------------------------------------------------------------------
def split_fences(text: str) -> Tuple[str, List[str]]:
    """(the text with fenced code blocks blanked out, the blocks' contents). Line count is kept."""
    prose, blocks, block, fence = [], [], [], None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if fence is None and m:
            fence, block = m.group(1), []
            prose.append("")
        elif fence is not None and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not line.strip()[len(m.group(1)):].strip():
            blocks.append("\n".join(block))
            fence = None
            prose.append("")
        elif fence is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    if fence is not None:  # an unclosed fence runs to the end of the file
        blocks.append("\n".join(block))
    return "\n".join(prose), blocks


def strip_comment(line: str) -> str:
    """A shell/YAML/Python comment: `#` at the start or after whitespace, to the end of the line."""
    return re.sub(r"(^|\s)#.*$", "", line)


def code_texts(text: str) -> List[str]:
    """Every piece of code in a Markdown text: fenced blocks (comments stripped) and inline spans."""
    prose, blocks = split_fences(text)
    out = ["\n".join(strip_comment(line) for line in block.split("\n")) for block in blocks]
    out += [m.group(2) for m in CODE_SPAN.finditer(prose)]
    return out


def prose_of(text: str) -> str:
    """The text outside code: fences blanked, inline code spans replaced by a placeholder."""
    prose, _ = split_fences(text)
    return CODE_SPAN.sub(lambda m: "code" + "\n" * m.group(0).count("\n"), prose)


def link_targets(text: str) -> List[str]:
    prose = prose_of(text)
    found = [m.group(1) for m in INLINE_LINK.finditer(prose)]
    found += [m.group(1) for m in REF_DEF.finditer(prose)]
    found += [m.group(1) for m in HTML_LINK.finditer(prose)]
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lower-cased, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> Set[str]:
    """The anchors a Markdown file offers: its headings' slugs (duplicates numbered -1, -2, ... as
    GitHub does) and explicit <a id=...> / <a name=...>."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: Dict[str, int] = {}
    out: Set[str] = set()
    for line in prose.split("\n"):
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    out.update(m.group(1) for m in HTML_ANCHOR.finditer(prose))
    return out


# ------------------------------------------------------------------------------------------------
# The checks, as functions (the tests below run them on the docs, and on a broken example)
# ------------------------------------------------------------------------------------------------
def broken_links(md: Path) -> List[str]:
    problems = []
    for target in link_targets(md.read_text(encoding="utf-8")):
        if not target or SCHEME.match(target) or target.startswith("//"):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md
        if not dest.exists():
            problems.append(f"{target}: no such file ({dest})")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def named_modules(text: str) -> Iterator[str]:
    for code in code_texts(text):
        for m in PYTHON_M.finditer(code):
            yield m.group(1).rstrip(".")


def runnable(module: str) -> Tuple[bool, str]:
    """Can `python -m <module>` run it? (True, '') or (False, why)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as e:
        return False, f"not importable ({type(e).__name__}: {e})"
    if spec is None:
        return False, "no such module"
    if spec.submodule_search_locations is not None:  # a package: python -m runs <package>.__main__
        try:
            main = importlib.util.find_spec(f"{module}.__main__")
        except (ImportError, ValueError):
            main = None
        return (main is not None), f"package without {module}.__main__"
    if spec.origin and spec.origin.endswith(".py"):
        source = Path(spec.origin).read_text(encoding="utf-8")
        return bool(MAIN_GUARD.search(source)), f"{spec.origin} has no `if __name__ == \"__main__\"`"
    return True, ""  # built-in or extension module


def makefile_targets(makefile: Path = REPO / "Makefile") -> Set[str]:
    targets: Set[str] = set()
    for line in makefile.read_text(encoding="utf-8").split("\n"):
        m = re.match(r"^([A-Za-z0-9_.][\w.\- ]*?)\s*::?(?!=)", line)  # 'a b: deps' (not 'X := value')
        if m:
            names = m.group(1).split()
            if names and names[0] == ".PHONY":
                continue
            targets.update(names)
        m = re.match(r"^\.PHONY\s*:(.*)$", line)
        if m:
            targets.update(m.group(1).split())
    return targets


def named_make_targets(text: str) -> Iterator[str]:
    for code in code_texts(text):
        for m in MAKE.finditer(code):
            yield m.group(2)


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------
def test_docs_exist():
    assert (REPO / "README.md").is_file() and len(DOC_FILES) > 1, DOC_FILES


@pytest.mark.parametrize("md", DOC_FILES, ids=rel)
def test_relative_links_resolve(md):
    problems = broken_links(md)
    assert not problems, f"{rel(md)}: broken links:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("md", DOC_FILES, ids=rel)
def test_python_m_modules_can_run(md):
    problems = []
    for module in sorted(set(named_modules(md.read_text(encoding="utf-8")))):
        ok, why = runnable(module)
        if not ok:
            problems.append(f"python -m {module}: {why}")
    assert not problems, f"{rel(md)}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("md", DOC_FILES, ids=rel)
def test_make_targets_exist(md):
    targets = makefile_targets()
    missing = sorted({t for t in named_make_targets(md.read_text(encoding="utf-8")) if t not in targets})
    assert not missing, f"{rel(md)} names make targets the Makefile lacks: {missing} (targets: {sorted(targets)})"


def test_readme_starts_with_make_run_then_make_test():
    _, blocks = split_fences((REPO / "README.md").read_text(encoding="utf-8"))
    commands = [strip_comment(line).strip() for line in blocks[0].split("\n") if strip_comment(line).strip()]
    assert commands[:2] == ["make run", "make test"], commands


def test_the_checks_catch_what_they_should(tmp_path):
    """The checkers themselves: a broken link, a wrong anchor, a module and a target that do not
    exist are reported; code and comments are not mistaken for links or commands."""
    (tmp_path / "there.md").write_text("# A title: with `code`\n\n## Twice\n\n## Twice\n")
    md = tmp_path / "doc.md"
    md.write_text(
        "[ok](there.md) [ok](there.md#a-title-with-code) [ok](there.md#twice-1) [ok](#local) [web](https://x.org/y)\n"
        "[gone](missing/file.md) [bad anchor](there.md#nope) ![img](img/none.png)\n\n"
        "## Local\n\n`[not a link](nowhere.md)` and `python -m no_such_module_xyz --help`\n\n"
        "```bash\nmake run ARGS=\"x=1\"   # make nosuchtarget in a comment\nmake nosuchtarget2\n"
        "python -m roadmap step=gelu   # python -m commented_out_module\n```\n")
    problems = broken_links(md)
    assert [p.split(":")[0] for p in problems] == ["missing/file.md", "there.md#nope", "img/none.png"], problems
    assert sorted(set(named_modules(md.read_text()))) == ["no_such_module_xyz", "roadmap"]
    assert not runnable("no_such_module_xyz")[0] and runnable("roadmap")[0]
    assert not runnable("roadmap.model")[0]  # a module without a __main__ guard
    assert list(named_make_targets(md.read_text())) == ["run", "nosuchtarget2"]
    assert {"run", "test", "sweep", "setup"} <= makefile_targets()
