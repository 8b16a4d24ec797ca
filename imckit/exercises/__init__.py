"""Checked exercises: a student fills in an answer cell, runs the check, and reads a verdict.

Each exercise with a computable answer has one check file in ``imckit/exercises/checks/``
(``ex-why-1`` -> ``why_1.py``), written in otter-grader's exception-based test format: test
functions decorated with ``otter.test_files.test_case``, whose parameters name the variables
the student's answer cell defines, and whose ``failure_message`` is the hint. The expected values
are computed inside those functions from the package (and from the chapter's own variables, which
otter passes in as ``env``) at the moment the check runs: no expected number is typed into a
check, so a change of the model moves the answer and its check together.

:func:`check` adds what otter does not have, a third verdict: an answer variable still holding
``...`` (the blank the student edition ships with) is "not yet answered", with the hint, and
runs no test. Otherwise otter's ``Checker`` runs the file against the caller's globals (no log
file is written) and the verdict is "right" or "wrong" with otter's message.

>>> r = check("ex-why-1", {"G": ..., "max_one": ...})
>>> r.status, r.missing
('unanswered', ['G', 'max_one'])
>>> check("ex-why-1", {"G": 2.0, "max_one": 1.5}).status
'wrong'
"""
from __future__ import annotations

import html
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKS = Path(__file__).resolve().parent / "checks"
STATUSES = ("right", "wrong", "unanswered")


def check_file(label: str) -> Path:
    """The check file of an exercise label (``"ex-why-1"`` -> ``checks/why_1.py``)."""
    if not isinstance(label, str) or not label.startswith("ex-"):
        raise ValueError(f"label={label!r} is not allowed: give an exercise label such as "
                         "'ex-why-1'")
    path = CHECKS / (label[3:].replace("-", "_") + ".py")
    if not path.is_file():
        raise ValueError(f"label={label!r} is not allowed: no checked exercise of that name; "
                         f"known: {', '.join(labels())}")
    return path


def labels() -> list[str]:
    """Every checked exercise, by label."""
    return sorted("ex-" + p.stem.replace("_", "-") for p in CHECKS.glob("*.py")
                  if p.stem != "__init__")


def _cases(path: Path) -> list:
    """The otter test cases of a check file (each with its function and hint)."""
    from otter.test_files import test_case

    ns: dict[str, Any] = {"__file__": str(path)}
    exec(compile(path.read_text(), str(path), "exec"), ns)   # a file of the package itself
    return [v for v in ns.values() if isinstance(v, test_case)]


def answers(label: str) -> list[str]:
    """The variable names an exercise's answer cell defines, in order.

    >>> answers("ex-why-1")
    ['G', 'max_one']
    """
    names: list[str] = []
    for case in _cases(check_file(label)):
        names += [p for p in inspect.signature(case.test_func).parameters
                  if p != "env" and p not in names]
    return names


@dataclass
class Result:
    """The verdict of one check: ``status`` is "right", "wrong" or "unanswered"."""

    label: str
    status: str
    missing: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    otter: Any = None      # otter's TestFile with every case's result (None if unanswered)

    @property
    def passed(self) -> bool:
        return self.status == "right"

    def __repr__(self) -> str:
        if self.status == "unanswered":
            return (f"{self.label}: not yet answered. Fill in {', '.join(self.missing)} in the "
                    "cell above, run it, then run this check again.\nHint: "
                    + " ".join(self.hints))
        if self.status == "right":
            return f"{self.label}: right."
        return f"{self.label}: not right yet.\n{self.otter.summary()}"

    def _repr_html_(self) -> str:
        colour = {"right": "#2e7d32", "wrong": "#c62828", "unanswered": "#8a6d00"}[self.status]
        word = {"right": "right", "wrong": "not right yet",
                "unanswered": "not yet answered"}[self.status]
        body = ""
        if self.status == "unanswered":
            names = ", ".join(f"<code>{html.escape(n)}</code>" for n in self.missing)
            body = (f"Fill in {names} in the cell above, run it, then run this check again."
                    f"<br><i>Hint:</i> {html.escape(' '.join(self.hints))}")
        elif self.status == "wrong":
            body = f"<pre>{html.escape(self.otter.summary())}</pre>"
        return (f"<div class='imckit-check imckit-check-{self.status}' style='border-left:4px "
                f"solid {colour};padding:0.3em 0.8em'><b>{html.escape(self.label)}</b>: "
                f"<b style='color:{colour}'>{word}</b>{'<br>' if body else ''}{body}</div>")


def check(label: str, env: dict | None = None) -> Result:
    """Check the answer to exercise ``label`` against ``env`` (default: the caller's globals).

    Returns a :class:`Result` that shows itself as the verdict in a notebook.
    """
    path = check_file(label)
    if env is None:
        env = inspect.currentframe().f_back.f_globals
    cases = _cases(path)
    names = answers(label)
    missing = [n for n in names if env.get(n, ...) is ...]
    if missing:
        hints = [c.failure_message for c in cases if c.failure_message]
        return Result(label, "unanswered", missing=missing, hints=hints)
    from otter.execute import Checker

    test = Checker.check(str(path), None, global_env=env)
    failed = [tcr for tcr in test.test_case_results if not tcr.passed]
    return Result(label, "right" if not failed else "wrong",
                  hints=[tcr.test_case.failure_message for tcr in failed
                         if tcr.test_case.failure_message], otter=test)
