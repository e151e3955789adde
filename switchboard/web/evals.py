"""The dashboard's eval pages and their JSON: the runs `switchboard eval` stored, and one run per arm.

GET /dashboard/evals                 the latest eval runs: when, scenarios, arms, calls, pass rate
GET /dashboard/evals/{run}           one run (`latest`: the last): report/evals_html.py's page, each call
                                     linking to /dashboard/calls/{id}
GET /api/evals?limit=                the runs as JSON
GET /api/evals/{run}                 `switchboard report --evals RUN --json`, the same summary

The figures are report/evals.py's (`build_summary`, with the dashboard's pricing): the page and the JSON
are two renderings of one summary, as the command line's text and JSON are. The routes go through the
dashboard's guards (its token, its security headers, a store failure as a 503).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from switchboard.report.evals import (
    RunOverview,
    build_summary,
    overview_json,
    rate_text,
    run_overviews,
    summary_json,
)
from switchboard.web import pages
from switchboard.web.live import jsonable

if TYPE_CHECKING:
    from switchboard.web.dashboard import Dashboard

RUNS_SHOWN = 50


def run_href(run: str) -> str:
    return f"/dashboard/evals/{quote(run, safe='')}"


def call_href(call_id: str) -> str:
    return f"/dashboard/calls/{quote(call_id, safe='')}"


class EvalViews:
    """The eval routes of one dashboard (its store, pricing and guards)."""

    def __init__(self, dashboard: Dashboard) -> None:
        self.dashboard = dashboard

    def routes(self) -> list[Route]:
        page, api = self.dashboard._page, self.dashboard._api
        return [
            Route("/dashboard/evals", page(self.runs_page)),
            Route("/dashboard/evals/{run:path}", page(self.run_page)),
            Route("/api/evals", api(self.api_runs), methods=["GET"]),
            Route("/api/evals/{run:path}", api(self.api_run), methods=["GET"]),
        ]

    @property
    def _logout(self) -> bool:
        return not self.dashboard.auth.open

    async def _runs(self, limit: int) -> list[RunOverview]:
        return run_overviews(await self.dashboard.store.eval_run_rows(limit))  # type: ignore[union-attr]

    async def _summary(self, run: str) -> Any:
        """The run's summary, or None when the store has no such run (`latest`: the last run)."""
        store = self.dashboard.store
        if run == "latest":
            latest = await store.eval_runs(1)  # type: ignore[union-attr]
            if not latest:
                return None
            run = latest[0]
        rows = await store.query_eval_results(run)  # type: ignore[union-attr]
        if not rows:
            return None
        return await asyncio.to_thread(build_summary, run, rows, self.dashboard.pricing)  # bootstrap: numpy

    # --- pages ---------------------------------------------------------------------------------------------

    async def runs_page(self, request: Request) -> Response:
        problem = self.dashboard._store_problem()
        if problem is not None:
            return HTMLResponse(evals_page("Eval runs", f'<p class="note">{pages.esc(problem)}</p>',
                                           self._logout))
        return HTMLResponse(evals_page("Eval runs", runs_table(await self._runs(RUNS_SHOWN)), self._logout))

    async def run_page(self, request: Request) -> Response:
        run = request.path_params["run"]
        problem = self.dashboard._store_problem()
        if problem is not None:
            return HTMLResponse(evals_page(f"Eval run {run}", f'<p class="note">{pages.esc(problem)}</p>',
                                           self._logout))
        summary = await self._summary(run)
        if summary is None:
            return HTMLResponse(evals_page(f"Eval run {run}", '<p class="note">No such eval run in the call '
                                           'store. <a href="/dashboard/evals">The runs it has</a>.</p>',
                                           self._logout), status_code=404)
        from switchboard.report.evals_html import summary_fragment

        body = (f'<p class="note"><a href="/dashboard/evals">All eval runs</a> · the same as '
                f'<code>switchboard report --evals {pages.esc(summary.run)}</code> · '
                f'<a href="/api/evals/{quote(summary.run, safe="")}">JSON</a></p>'
                + summary_fragment(summary, call_href))
        return HTMLResponse(evals_page(f"Eval run {summary.run}", body, self._logout))

    # --- the JSON API --------------------------------------------------------------------------------------

    async def api_runs(self, request: Request) -> Response:
        from switchboard.web.dashboard import _limit

        problem = self.dashboard._store_problem()
        if problem is not None:
            return JSONResponse({"error": problem}, status_code=503)
        runs = await self._runs(_limit(request, default=RUNS_SHOWN))
        return JSONResponse(jsonable({"runs": [overview_json(run) for run in runs]}))

    async def api_run(self, request: Request) -> Response:
        run = request.path_params["run"]
        problem = self.dashboard._store_problem()
        if problem is not None:
            return JSONResponse({"error": problem}, status_code=503)
        summary = await self._summary(run)
        if summary is None:
            return JSONResponse({"error": f"no eval run {run!r} in the call store"}, status_code=404)
        return JSONResponse(jsonable(summary_json(summary)))


def runs_table(runs: list[RunOverview]) -> str:
    if not runs:
        return ('<p class="empty" id="no-runs">No eval runs yet: <code>switchboard eval</code> places '
                "simulated calls and stores its verdicts here (docs/evals.md).</p>")
    rows = []
    for run in runs:
        arms = "<br>".join(f"{pages.esc(name)}: {pages.esc(rate_text(rate))}"
                           for name, rate in run.arms.items())
        rows.append(
            f'<tr data-run="{pages.esc(run.run)}"><td><a href="{pages.esc(run_href(run.run))}">'
            f'{pages.esc(run.run)}</a>{" <small>(replay)</small>" if run.kind == "replay" else ""}</td>'
            f"<td>{pages.esc(pages.when(run.started_at))}</td>"
            f"<td>{pages.esc(', '.join(run.scenarios))}</td><td>{arms}</td>"
            f'<td class="num">{run.calls}</td><td class="num">{pages.esc(rate_text(run.overall))}</td></tr>')
    return ('<table class="calls eval-runs"><thead><tr><th>run</th><th>started (UTC)</th><th>scenarios</th>'
            "<th>arms: pass rate</th><th>calls</th><th>pass rate [95 % CI]</th></tr></thead>"
            f'<tbody>{"".join(rows)}</tbody></table>')


def evals_page(title: str, content: str, logout: bool) -> str:
    body = f"<h1>{pages.esc(title)}</h1>{content}"
    return pages.layout(title, body, active="evals", logout=logout, css=["evals.css"])
