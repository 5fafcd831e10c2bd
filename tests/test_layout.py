"""The house rules of the layout (README "Layout"), checked on the source itself.

Imports run one way, `bot -> workers -> config`, and `lab` imports none of them (the client
must be tested against an independent implementation). No two modules or packages have
names that differ only by a letter or by a prefix (operation/operations, jobs/ops_jobs):
a newcomer finds a behaviour by its name alone.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "workers", "config", "lab")
# Who may import whom (a package may always import itself); the CLI starts labs.
ALLOWED = {"bot": {"workers", "config", "lab"}, "workers": {"config"}, "config": set(),
           "lab": set()}


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path: Path) -> None:
    package = path.relative_to(ROOT).parts[0]
    wrong = imported_packages(path) - ALLOWED[package] - {package}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


def names() -> dict[str, set[str]]:
    """Every module and package name -> where it is."""
    found: dict[str, set[str]] = {}
    for path in sources():
        where = path.relative_to(ROOT)
        name = where.parent.name if path.name == "__init__.py" else path.stem
        found.setdefault(name, set()).add(str(where.parent if path.name == "__init__.py"
                                              else where))
    return found


def differ_by_a_letter(a: str, b: str) -> bool:
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return len(long) - len(short) == 1 and any(
        long[:i] + long[i + 1:] == short for i in range(len(long)))


def differ_by_a_prefix(a: str, b: str) -> bool:
    short, long = sorted((a, b), key=len)
    return long.endswith("_" + short) and long.split("_")[0] in {
        "op", "ops", "my", "new", "old", "the", "x", "more", "extra", "base"}


def test_no_two_names_differ_only_by_a_letter_or_a_prefix() -> None:
    found = names()
    pairs = [(a, b) for a, b in itertools.combinations(sorted(found), 2)
             if differ_by_a_letter(a, b) or differ_by_a_prefix(a, b)]
    assert not pairs, [(sorted(found[a]), sorted(found[b])) for a, b in pairs]


def test_the_checks_catch_the_pairs_the_layout_was_rebuilt_to_remove() -> None:
    assert differ_by_a_letter("operation", "operations")
    assert differ_by_a_letter("approval", "approvals")
    assert differ_by_a_letter("worker", "workers")
    assert differ_by_a_prefix("jobs", "ops_jobs")
    assert not differ_by_a_letter("plan", "clean_up")
    assert not differ_by_a_prefix("jobs", "read_jobs")
