"""An eval run as HTML: `switchboard report --evals RUN --html FILE` and the dashboard's run page.

    summary = build_summary(run, rows, pricing)               # report/evals.py
    summary_fragment(summary, call_href)   # <section class="switchboard-evals">: pass rates, table, calls
    summary_html(summary)                  # the same in a standalone document, EVALS_CSS inline

The figures are report/evals.py's (`table`, the same cells as the text report); this module only lays them
out: the pass rates drawn as bars with their Wilson intervals, the table, what failed, and each call's
checks and the judge's verdicts with its evidence (linking to the call's page where `call_href` gives
one). Nothing is fetched from anywhere: plain HTML and inline CSS, every value escaped. Hooks for tests:
`table.evals`, `.rate-chart [data-arm][data-scenario]`, `article.eval-call[data-call-id][data-verdict]`,
`li.check.pass` / `li.check.fail`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from typing import Any

from switchboard.report.evals import CallVerdict, Rate, Summary, rate_text, table

EVALS_CSS = """
.switchboard-evals { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933; }
.switchboard-evals dl.run { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; }
.switchboard-evals dl.run dt { font-weight: 600; } .switchboard-evals dl.run dd { margin: 0; }
.switchboard-evals .rate-chart { display: grid;
  grid-template-columns: max-content max-content minmax(12rem, 28rem) max-content; gap: .25rem .7rem;
  align-items: center; font-size: .85rem; margin: .6rem 0 1rem; }
.switchboard-evals .rate-chart .scenario { font-weight: 600; }
.switchboard-evals .rate-track { position: relative; height: .9rem; background: #eef1f5; border-radius: 2px; }
.switchboard-evals .rate-track .ci { position: absolute; top: .3rem; height: .3rem; background: #9fb3c8; }
.switchboard-evals .rate-track .point { position: absolute; top: 0; width: .25rem; height: .9rem;
  margin-left: -.125rem; background: #2f6fed; }
.switchboard-evals .rate-track .none { position: absolute; left: .3rem; top: -.1rem; color: #667085;
  font-size: .75rem; }
.switchboard-evals .rate-chart .num { font-variant-numeric: tabular-nums; color: #3e4c59; }
.switchboard-evals table.evals { border-collapse: collapse; font-size: .85rem; margin: .5rem 0;
  background: #fff; }
.switchboard-evals table.evals th, .switchboard-evals table.evals td { border-bottom: 1px solid #d9e2ec;
  padding: .25rem .5rem; text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.switchboard-evals table.evals th[scope=row] { text-align: left; font-weight: 500; }
.switchboard-evals table.evals thead th { background: #f0f4f8; }
.switchboard-evals table.evals .best { background: #e3f8ff; }
.switchboard-evals table.evals td.significant { color: #b42318; font-weight: 600; }
.switchboard-evals .notes { font-size: .85rem; color: #52606d; }
.switchboard-evals article.eval-call { background: #fff; border: 1px solid #d9e2ec; border-left-width: 4px;
  border-radius: 4px; padding: .4rem .8rem; margin: .6rem 0; }
.switchboard-evals article.eval-call[data-verdict=pass] { border-left-color: #12b76a; }
.switchboard-evals article.eval-call[data-verdict=fail] { border-left-color: #d92d20; }
.switchboard-evals article.eval-call[data-verdict=unjudged] { border-left-color: #f79009; }
.switchboard-evals article.eval-call header { font-size: .9rem; }
.switchboard-evals article.eval-call header .facts { color: #667085; }
.switchboard-evals .verdict { font-weight: 700; text-transform: uppercase; font-size: .8rem; }
.switchboard-evals [data-verdict=pass] .verdict { color: #067647; }
.switchboard-evals [data-verdict=fail] .verdict { color: #b42318; }
.switchboard-evals [data-verdict=unjudged] .verdict { color: #b54708; }
.switchboard-evals ul.checks, .switchboard-evals ul.judged { list-style: none; padding: 0; margin: .3rem 0;
  font-size: .85rem; }
.switchboard-evals li.check::before, .switchboard-evals li.criterion::before { display: inline-block;
  width: 1.2em; font-weight: 700; }
.switchboard-evals li.pass::before { content: "✓"; color: #067647; }
.switchboard-evals li.fail::before { content: "✗"; color: #b42318; }
.switchboard-evals li .detail, .switchboard-evals q { color: #52606d; }
.switchboard-evals table.pairs { border-collapse: collapse; font-size: .8rem; }
.switchboard-evals table.pairs th, .switchboard-evals table.pairs td { border: 1px solid #d9e2ec;
  padding: .2rem .4rem; text-align: left; vertical-align: top; }
.switchboard-evals .table-wrap { overflow-x: auto; }
"""

CallHref = Callable[[str], str | None]
VERDICT = {True: "pass", False: "fail", None: "unjudged"}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _when(value: Any) -> str:
    if value is None:
        return "-"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text[:19].replace("T", " ")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def summary_fragment(summary: Summary, call_href: CallHref | None = None) -> str:
    """The run as an HTML fragment (no <html>/<head>), styled by EVALS_CSS. `call_href(call_id)`: where a
    call's page is (the dashboard's), None to show its id alone."""
    parts = ['<section class="switchboard-evals">', _facts(summary)]
    if not summary.calls:
        parts += ['<p class="empty">This run has no calls.</p>', "</section>"]
        return "\n".join(parts)
    parts += ["<h2>Pass rates</h2>", _rate_chart(summary), "<h2>Per arm</h2>", _table(summary),
              _notes(summary), f"<h2>Calls <small>({len(summary.calls)})</small></h2>",
              *(_call(call, call_href) for call in summary.calls), "</section>"]
    return "\n".join(parts)


def summary_html(summary: Summary) -> str:
    """A complete standalone document (opens offline): summary_fragment with the CSS inline."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"Eval run {summary.run}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\nbody {{ margin: 1.5rem; background: #f6f7f9; }}\n{EVALS_CSS}</style>", "</head>", "<body>",
        f"<main><h1>{escape(title)}</h1>", summary_fragment(summary),
        f"<footer><p>Generated by <code>switchboard report --evals</code> at {escape(generated)}.</p>"
        "</footer>",
        "</main>", "</body>", "</html>", ""])


def _facts(summary: Summary) -> str:
    unjudged = sum(arm.overall.unjudged for arm in summary.arms)
    kind = "replayed callers" if summary.kind == "replay" else "simulated calls"
    items = [("run", summary.run), ("kind", kind),
             ("when (UTC)", f"{_when(summary.started_at)} → {_when(summary.ended_at)}"),
             ("arms", ", ".join(arm.name for arm in summary.arms) or "-"),
             ("scenarios", ", ".join(summary.scenarios) or "-"),
             ("calls", f"{len(summary.calls)}" + (f" ({unjudged} unjudged)" if unjudged else ""))]
    rows = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in items)
    return f'<dl class="run">{rows}</dl>'


def _rate_row(label: str, arm: str, scenario: str, rate: Rate) -> str:
    if rate.rate is None:
        track = '<span class="none">no judged call</span>'
    else:
        low, high = rate.interval or (rate.rate, rate.rate)
        track = (f'<span class="ci" style="left:{100 * low:.1f}%;width:{100 * (high - low):.1f}%"></span>'
                 f'<span class="point" style="left:{100 * rate.rate:.1f}%"></span>')
    return (f'<span class="scenario">{escape(label)}</span><span>{escape(arm)}</span>'
            f'<span class="rate-track" data-arm="{escape(arm)}" data-scenario="{escape(scenario)}" '
            'role="img" '
            f'aria-label="{escape(f"{arm}, {label}: {rate_text(rate)}")}">{track}</span>'
            f'<span class="num">{escape(rate_text(rate))}</span>')


def _rate_chart(summary: Summary) -> str:
    """Each arm's pass rate per scenario and overall: a dot at the rate on a bar of its 95 % interval."""
    cells = [_rate_row(name, arm.name, name, arm.scenarios.get(name, Rate()))
             for name in summary.scenarios for arm in summary.arms]
    if len(summary.scenarios) > 1:
        cells += [_rate_row("overall", arm.name, "", arm.overall) for arm in summary.arms]
    return (f'<div class="rate-chart">{"".join(cells)}</div>'
            '<p class="notes">Each bar runs from 0 to 100 %: the dot is the pass rate, the band its 95 % '
            "Wilson interval (wide when there are few calls).</p>")


def _table(summary: Summary) -> str:
    best = [arm.best for arm in summary.arms]
    head = "".join(f'<th scope="col"{" class=best" if is_best else ""}>{escape(arm.name)}'
                   f'{" (best)" if is_best else ""}</th>'
                   for arm, is_best in zip(summary.arms, best, strict=True))
    body = []
    for label, cells in table(summary):
        tds = []
        for cell, is_best in zip(cells, best, strict=True):
            classes = (["best"] if is_best else []) + (["significant"] if cell.endswith("*") else [])
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            tds.append(f"<td{attrs}>{escape(cell)}</td>")
        body.append(f'<tr><th scope="row">{escape(label)}</th>{"".join(tds)}</tr>')
    return (f'<div class="table-wrap"><table class="evals"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _notes(summary: Summary) -> str:
    lines = [f"{arm.name}: {count} call(s) failed “{check}”"
             for arm in summary.arms for check, count in sorted(arm.failing_checks.items())]
    lines += [f"{arm.name}: {count} call(s) unjudged: {reason}"
              for arm in summary.arms for reason, count in sorted(arm.unjudged_reasons.items())]
    lines.append("Pass rates: passed/judged, 95 % Wilson interval (unjudged calls counted apart, never as "
                 "passes); scores: the judge's mean, 95 % bootstrap interval; p: Fisher's exact test (pass "
                 f"rates) and Mann-Whitney U (quality) against the best arm, * p < {summary.alpha}; "
                 "wins vs X: how often a call of the column's arm beats one of X's on quality (ties count "
                 "half).")
    lines += summary.notes
    return '<ul class="notes">' + "".join(f"<li>{escape(line)}</li>" for line in lines) + "</ul>"


def _call(call: CallVerdict, call_href: CallHref | None) -> str:
    verdict = VERDICT[call.passed]
    href = call_href(call.call_id) if call_href else None
    name = (f'<a href="{escape(href)}">{escape(call.call_id)}</a>' if href else
            f"<code>{escape(call.call_id)}</code>")
    facts = [f"{call.turns} answered turn(s)", f"voice-to-voice p50 {_ms(call.v2v_p50_ms)}"]
    if call.talk_over_s is not None:
        facts.append(f"talk-over {call.talk_over_s:.2f} s")
    if call.interrupted:
        facts.append(f"{call.interrupted} interrupted")
    if call.judge_cost is not None:
        facts.append(f"judge ${call.judge_cost:.4f}")
    checks = "".join(
        f'<li class="check {"pass" if check.get("passed") else "fail"}"><strong>{_e(check.get("name"))}'
        f'</strong> <span class="detail">{escape(check.get("detail") or "")}</span></li>'
        for check in call.checks)
    parts = [f'<article class="eval-call" data-call-id="{escape(call.call_id)}" data-verdict="{verdict}">',
             f'<header><span class="verdict">{verdict}</span> {escape(call.arm)} · {escape(call.scenario)} · '
             f'call {name} <span class="facts">· {escape(" · ".join(facts))}</span></header>',
             f'<ul class="checks">{checks or "<li>no checks</li>"}</ul>', _judged(call)]
    if call.pairs:
        parts.append(_pairs(call, call_href))
    parts.append("</article>")
    return "".join(parts)


def _judged(call: CallVerdict) -> str:
    if call.unjudged:
        return f'<p class="unjudged">unjudged: {escape(call.unjudged)}</p>'
    items = [f'<li class="criterion {"pass" if met else "fail"}">{escape(text)}'
             f'{_evidence(call.evidence.get(text))}</li>' for text, met in call.criteria.items()]
    items += [f'<li class="score">{escape(item)}: <strong>{score:g}</strong>/5'
              f"{_evidence(call.evidence.get(item))}</li>" for item, score in call.scores.items()]
    return f'<ul class="judged">{"".join(items)}</ul>' if items else ""


def _evidence(text: str | None) -> str:
    return f" — <q>{escape(text)}</q>" if text else ""


def _pairs(call: CallVerdict, call_href: CallHref | None) -> str:
    href = call_href(call.original_call) if call_href and call.original_call else None
    original = (f'<a href="{escape(href)}">{escape(call.original_call)}</a>' if href else
                escape(call.original_call or "-"))
    rows = "".join(
        f'<tr><td>{_e(pair.get("turn"))}</td><td>{_e(pair.get("caller"))}</td>'
        f'<td>{_e(pair.get("original"))}</td><td>{_e(pair.get("candidate"))}</td>'
        f'<td>{escape(pair.get("preferred") or "unjudged")}</td><td>{_e(pair.get("reason"))}</td></tr>'
        for pair in call.pairs)
    return (f'<p>Replayed from call {original}; the judge compared each answer (shown in a random order):</p>'
            '<div class="table-wrap"><table class="pairs"><thead><tr><th>turn</th><th>caller</th>'
            '<th>original answered</th><th>candidate answered</th><th>judge prefers</th><th>why</th></tr>'
            f'</thead><tbody>{rows}</tbody></table></div>')
