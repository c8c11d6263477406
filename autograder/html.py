"""Self-contained HTML pages: one feedback page per student, one summary page per class.

Pages embed their style and draw their charts as inline SVG, so they open from a file, an
e-mail or an LMS without anything else.  They are rendered from reports only, and reports
hold messages and numbers, never the tests' code or the solutions.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from autograder.report import PASSED, GradeReport

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:60rem;margin:2rem auto;
padding:0 1rem;color:#1d2330;line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}.meta{color:#5b6474;font-size:.9rem}
.score{font-size:2rem;font-weight:700;margin:.6rem 0}
.exercise{border:1px solid #d8dde6;border-left:6px solid #999;border-radius:6px;padding:.7rem 1rem;margin:.8rem 0}
.exercise.passed{border-left-color:#2e9d57}.exercise.failed{border-left-color:#d04437}
.exercise.error,.exercise.timeout{border-left-color:#e08a00}
.exercise h2{font-size:1.05rem;margin:0;display:flex;justify-content:space-between}
.badge{font-size:.8rem;padding:.1rem .5rem;border-radius:1rem;background:#eef0f4;margin-left:.5rem}
.passed .badge{background:#dff3e6;color:#1f6e3c}.failed .badge{background:#fbe3e1;color:#8f2a21}
.message{white-space:pre-wrap;margin:.5rem 0}.diagnosis{background:#fff7e0;border-radius:4px;padding:.4rem .6rem}
pre{background:#f5f6f8;padding:.5rem;border-radius:4px;overflow-x:auto;font-size:.85rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{border-bottom:1px solid #e3e6ec;padding:.3rem .5rem;text-align:left}
svg{max-width:100%;height:auto}.chart{margin:.5rem 0;max-width:38rem;display:block}
"""

_COLOURS = ("#2f6fde", "#d04437", "#2e9d57", "#8a4fd0", "#e08a00")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n")


# ------------------------------------------------------------------------------- charts


def _scale(values: list[float], log: bool) -> list[float]:
    return [math.log10(v) if log and v > 0 else (v if not log else float("nan")) for v in values]


def line_chart(figure: dict[str, Any], width: int = 520, height: int = 300) -> str:
    """An inline SVG line chart of ``figure`` (as recorded by ``checks.plot_curves``)."""
    xs = _scale([float(v) for v in figure.get("x", [])], bool(figure.get("xlog")))
    curves = {name: _scale([float(v) for v in ys], bool(figure.get("ylog")))
              for name, ys in figure.get("curves", {}).items()}
    finite_y = [y for ys in curves.values() for y in ys if math.isfinite(y)]
    finite_x = [x for x in xs if math.isfinite(x)]
    if not finite_x or not finite_y:
        return ""
    left, right, top, bottom = 50, 10, 28, 36
    x0, x1 = min(finite_x), max(finite_x)
    y0, y1 = min(finite_y), max(finite_y)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y: float) -> float:
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(figure.get("title", ""))}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{_e(figure.get("title", ""))}</text>',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#c9ced8"/>']
    for value, label in ((y0, y0), (y1, y1)):
        shown = f"1e{label:.0f}" if figure.get("ylog") else f"{label:.3g}"
        parts.append(f'<text x="{left - 4}" y="{py(value) + 4}" text-anchor="end" font-size="10">{shown}</text>')
    for value in (x0, x1):
        shown = f"1e{value:.0f}" if figure.get("xlog") else f"{value:.3g}"
        parts.append(f'<text x="{px(value)}" y="{height - bottom + 14}" text-anchor="middle" font-size="10">{shown}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" font-size="11">{_e(figure.get("xlabel", ""))}</text>')
    for index, (name, ys) in enumerate(curves.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{left + 8}" y="{top + 14 + 14 * index}" font-size="11" fill="{colour}">{_e(name)}</text>')
    parts.append("</svg>")
    if figure.get("note"):
        parts.append(f'<p class="figure-note">{_e(figure["note"])}</p>')
    return "".join(parts)


def bar_chart(title: str, labels: list[str], values: Sequence[float], *, maximum: float | None = None,
              width: int = 520, height: int = 240) -> str:
    """An inline SVG column chart (for a few short labels, such as score ranges)."""
    if not values:
        return ""
    top_value = maximum if maximum else max(max(values), 1)
    left, bottom, top = 10, 48, 26
    slot = (width - 2 * left) / len(values)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{_e(title)}</text>']
    for index, (label, value) in enumerate(zip(labels, values)):
        bar = (height - top - bottom) * (value / top_value if top_value else 0)
        x = left + index * slot
        parts.append(f'<rect x="{x + 2:.1f}" y="{height - bottom - bar:.1f}" width="{max(slot - 4, 1):.1f}" '
                     f'height="{bar:.1f}" fill="#2f6fde"><title>{_e(label)}: {value:g}</title></rect>')
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - bottom - bar - 3:.1f}" text-anchor="middle" '
                     f'font-size="10">{value:g}</text>')
        parts.append(f'<text x="{x + slot / 2:.1f}" y="{height - bottom + 12}" text-anchor="middle" '
                     f'font-size="9">{_e(label[:18])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_rows(title: str, labels: list[str], values: list[float], *, maximum: float, unit: str = "",
             width: int = 620) -> str:
    """An inline SVG chart of horizontal bars, one row per (long) label."""
    if not values:
        return ""
    row, label_width, top = 22, 230, 26
    height = top + row * len(values) + 8
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{_e(title)}</text>']
    span = width - label_width - 60
    for index, (label, value) in enumerate(zip(labels, values)):
        y = top + index * row
        bar = span * (value / maximum if maximum else 0)
        parts.append(f'<text x="{label_width - 6}" y="{y + 15}" text-anchor="end" font-size="11">{_e(label)}</text>')
        parts.append(f'<rect x="{label_width}" y="{y + 4}" width="{bar:.1f}" height="{row - 8}" fill="#2f6fde">'
                     f'<title>{_e(label)}: {value:g}{unit}</title></rect>')
        parts.append(f'<text x="{label_width + bar + 4:.1f}" y="{y + 15}" font-size="11">{value:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -------------------------------------------------------------------------------- pages


def student_page(report: GradeReport) -> str:
    """The feedback page of one student."""
    who = report.student or "Your notebook"
    body = [f"<h1>{_e(report.assignment)}</h1>",
            f'<div class="meta">{_e(who)} · seed {_e(report.seed)} · graded by {_e(report.engine)}</div>']
    if report.status != "graded":
        body.append(f'<div class="exercise error"><h2>Not graded</h2><div class="message">{_e(report.error)}</div></div>')
        return _page(f"{report.assignment}: feedback", "".join(body))
    body.append(f'<div class="score">{report.final_score:g} / {report.max_score:g}</div>')
    if report.adjustments():
        body.append(f'<div class="meta">The tests gave {report.score:g}; {_e(report.adjustments())}.</div>')
    for note in report.notes:
        body.append(f'<div class="exercise failed"><div class="message">{_e(note)}</div></div>')
    for test in report.tests:
        status = test.status
        section = [f'<section class="exercise {_e(status)}" id="{_e(test.id)}">',
                   f'<h2><span>{_e(test.name)}<span class="badge">{_e(status)}</span></span>'
                   f'<span>{test.points:g} / {test.max_points:g}</span></h2>']
        if status != PASSED and test.message:
            section.append(f'<div class="message">{_e(test.message)}</div>')
        if test.diagnosis:
            section.append(f'<div class="diagnosis">Likely mistake: {_e(test.diagnosis)}</div>')
        for figure in test.figures:
            section.append(line_chart(figure))
        if test.output.strip():
            section.append(f"<details><summary>What your code printed</summary><pre>{_e(test.output)}</pre></details>")
        section.append("</section>")
        body.append("".join(section))
    if report.cell_problems:
        items = "".join(f"<li><b>{_e(p.cell)}</b>: <span class=\"message\">{_e(p.message)}</span></li>"
                        for p in report.cell_problems)
        body.append(f"<h2>Cells that raised an error</h2><ul>{items}</ul>")
    return _page(f"{report.assignment}: feedback", "".join(body))


def _failure_kind(test: Any) -> str:
    """A failure, grouped with the same failure of other students: the named mistake, else the
    message's first sentence with its numbers left out."""
    if test.diagnosis:
        return f"Likely mistake: {test.diagnosis}"
    first = re.split(r"(?<=[.!?])\s", test.message.strip(), maxsplit=1)[0] if test.message.strip() else test.status
    return re.sub(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", "…", first)[:160]


def class_page(reports: list[GradeReport]) -> str:
    """The instructor's summary of one problem set across the class."""
    graded = [report for report in reports if report.status == "graded"]
    title = reports[0].assignment if reports else "class"
    body = [f"<h1>{_e(title)}: class summary</h1>",
            f'<div class="meta">{len(reports)} submissions, {len(reports) - len(graded)} not graded</div>']
    if graded:
        maximum = graded[0].max_score
        bins = 10
        counts = [0] * bins
        for report in graded:
            counts[min(int(report.final_score / maximum * bins), bins - 1) if maximum else 0] += 1
        labels = [f"{i * maximum / bins:.3g}–{(i + 1) * maximum / bins:.3g}" for i in range(bins)]
        body.append(bar_chart("Scores", labels, counts))
        exercise_ids = [test.id for test in graded[0].tests]
        rates = [100 * sum(1 for r in graded for t in r.tests if t.id == test_id and t.status == PASSED) / len(graded)
                 for test_id in exercise_ids]
        names = {test.id: test.name for test in graded[0].tests}
        body.append(bar_rows("Pass rate per exercise", [names[test_id] for test_id in exercise_ids],
                             [round(rate, 1) for rate in rates], maximum=100, unit="%"))
        untouched = [r for r in graded if r.tests and all("not implemented yet" in t.message for t in r.tests)]
        if untouched:
            body.append(f'<div class="meta">{len(untouched)} untouched notebooks (no exercise answered): '
                        f'{_e(", ".join(r.student or "?" for r in untouched))}</div>')
        started = [r for r in graded if r not in untouched]
        failures = Counter((names.get(t.id, t.id), _failure_kind(t)) for r in started for t in r.tests
                           if t.status != PASSED and "not implemented yet" not in t.message)
        if failures:
            rows = "".join(f"<tr><td>{_e(exercise)}</td><td>{_e(kind)}</td><td>{count}</td></tr>"
                           for (exercise, kind), count in failures.most_common(15))
            body.append(f"<h2>Most common failures</h2><table><tr><th>exercise</th><th>mistake, or what failed</th>"
                        f"<th>students</th></tr>{rows}</table>")
    rows = "".join(
        f'<tr><td><a href="{_e(quote(r.student or "") + ".html")}">{_e(r.student)}</a></td>'
        f"<td>{r.final_score:g} / {r.max_score:g}</td>"
        f"<td>{_e(r.error or ' '.join([*r.notes, r.adjustments()]).strip())}</td></tr>" for r in reports)
    body.append(f"<h2>Students</h2><table><tr><th>student</th><th>score</th><th>note</th></tr>{rows}</table>")
    return _page(f"{title}: class summary", "".join(body))


def audit_page(audits: list[Any]) -> str:
    """The audits of one or more problem sets: the bar, per test cell, the mistakes, the survivors."""
    parts = ["<h1>Audit of the problem sets' tests</h1>"]
    for audit in audits:
        verdict = "passed" if audit.passed else "failed"
        parts.append(f'<section class="exercise {verdict}"><h2>{_e(audit.ps)}<span class="badge">'
                     f'{verdict.upper()}</span></h2>')
        parts.append(f'<p class="meta">{len(audit.seeds)} seeds for the solution, mistakes and alternatives; '
                     f'{len(audit.mutant_seeds)} for each mutant</p>')
        rows = "".join(f"<tr><td>{'✓' if condition.holds else '✗'}</td><td>{_e(condition.name)}</td>"
                       f"<td>{_e(condition.detail)}</td></tr>" for condition in audit.conditions)
        parts.append(f"<table><tr><th></th><th>condition</th><th>found</th></tr>{rows}</table>")
        if audit.mutants_checked:
            rows = "".join(f"<tr><td>{_e(test)}</td><td>{row['mutants']}</td><td>{row['mutants hidden only']}</td>"
                           f"<td>{row['mistakes']}</td><td>{row['mistakes hidden only']}</td></tr>"
                           for test, row in audit.per_test().items())
            parts.append("<h3>Per test cell</h3><table><tr><th>test cell</th><th>mutants killed</th>"
                         "<th>only by its hidden tests</th><th>mistakes caught</th><th>only by its hidden tests</th>"
                         f"</tr>{rows}</table>")
        rows = "".join(f"<tr><td>{_e(m.id)}</td><td>{_e(m.cell)}</td><td>{'yes' if m.caught and m.named else 'NO'}</td>"
                       f"<td>{'visible tests' if m.by_visible else 'hidden tests only'}</td></tr>"
                       for m in audit.mistakes)
        parts.append("<h3>Catalogued mistakes</h3><table><tr><th>mistake</th><th>cell</th><th>caught and named</th>"
                     f"<th>caught by</th></tr>{rows}</table>")
        survivors = [m for m in audit.mutants if m.status != "killed"]
        if survivors:
            items = "".join(f"<li><b>{_e(m.status)}</b>: {_e(m.key)}<pre>{_e(m.diff)}</pre>"
                            + (f"<p>{_e(m.reason)}</p>" if m.reason else "") + "</li>" for m in survivors)
            parts.append(f"<h3>Surviving mutants</h3><ul>{items}</ul>")
        parts.append("</section>")
    return _page("Audit", "".join(parts))
