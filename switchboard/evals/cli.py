"""The command lines: `switchboard eval` and `switchboard report --evals RUN`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TextIO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `switchboard eval`."""
    parser.add_argument("evals", nargs="?",
                        help="the scenarios file (default: ./evals.yaml, else the bundled example, which "
                             "runs offline on the bundled pipeline.yaml)")
    parser.add_argument("--pipeline",
                        help="the pipelines to evaluate, comma-separated; a kind: split pipeline stands for "
                             "its arms (default: default_pipeline)")
    parser.add_argument("--config", help="pipeline.yaml (default: as for serve)")
    parser.add_argument("--url", help="a running server's media WebSocket (ws://host:port/media-stream) "
                                      "instead of an in-process one; give its call store with --db")
    parser.add_argument("--db", help="the call store (default: the pipeline file's database_url, else "
                                     "./switchboard.db)")
    parser.add_argument("--concurrency", type=int, default=2, help="calls at once (default 2)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="run the callers N times faster than real time (for pipelines that can)")
    parser.add_argument("--run-id", help="name the run (default: the time and a random suffix)")
    parser.add_argument("--replay", action="store_true",
                        help="replay recorded calls (record: true) into --pipeline instead of scenarios")
    parser.add_argument("--since", default="24h", help="--replay: calls started this recently (default 24h)")
    parser.add_argument("--from-pipeline", help="--replay: only calls recorded on this pipeline")
    parser.add_argument("--limit", type=int, default=20,
                        help="--replay: at most this many calls (default 20)")
    parser.add_argument("--gate", action="append", default=[], metavar="RULE",
                        help='fail (exit 1) when an arm falls short, e.g. "pass_rate>=0.9" (repeatable)')
    parser.add_argument("-v", "--verbose", action="store_true", help="show the server's log")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """`switchboard report`'s eval options."""
    parser.add_argument("--evals", metavar="RUN", help="report an eval run (`latest`: the last one) instead "
                                                       "of live traffic")
    parser.add_argument("--gate", action="append", default=[], metavar="RULE",
                        help='with --evals: exit 1 when an arm falls short, e.g. "pass_rate>=0.9"')
    parser.add_argument("--include-evals", action="store_true",
                        help="count the calls `switchboard eval` placed with the live traffic")


def _gates(rules: list[str], command: str) -> list[tuple[str, str, float]] | None:
    from switchboard.report.evals import parse_gates

    try:
        return parse_gates(rules)
    except ValueError as exc:
        print(f"switchboard {command}: {exc}", file=sys.stderr)
        return None


def _store_url(args: argparse.Namespace, config: object) -> str:
    return args.db or getattr(config, "database_url", None) or "switchboard.db"


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`switchboard eval`; exit 0, 1 when a --gate fails, 2 on a bad file or option."""
    from switchboard.config import default_config_path, load_config
    from switchboard.evals.scenarios import BUNDLED_EVALS, EVALS_FILE_NAME, load_evals
    from switchboard.logs import configure as configure_logs
    from switchboard.report.evals import check_gates

    out = out or sys.stdout
    configure_logs(logging.INFO if args.verbose else logging.WARNING)
    if args.concurrency < 1 or args.speed <= 0:
        print("switchboard eval: --concurrency must be at least 1 and --speed above 0", file=sys.stderr)
        return 2
    gates = _gates(args.gate, "eval")
    if gates is None:
        return 2
    config = load_config(args.config or default_config_path())
    names = [name.strip() for name in (args.pipeline or config.default_pipeline).split(",") if name.strip()]
    if args.replay:
        from switchboard.evals.replay import run_replay

        return run_replay(args, config, names, _store_url(args, config), gates, out)
    from pathlib import Path

    path = Path(args.evals) if args.evals else Path(EVALS_FILE_NAME)
    if not args.evals and not path.is_file():
        path = BUNDLED_EVALS
    evals = load_evals(path)
    report = asyncio.run(_evaluate(args, config, names, evals, out))
    if report is None:
        return 2
    failures = check_gates(report, gates)
    for failure in failures:
        print(f"switchboard eval: gate failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


async def _evaluate(args: argparse.Namespace, config: object, names: list[str], evals: object,
                    out: TextIO) -> object:
    from switchboard.evals.runner import Runner, arms_of, new_run_id
    from switchboard.report import pricing_from_config
    from switchboard.report.evals import build_summary, format_summary
    from switchboard.store import CallStore

    arms = arms_of(config, names)  # type: ignore[arg-type]
    store = CallStore(_store_url(args, config))
    await store.open()
    try:
        runner = Runner(evals, config, arms, store, run=args.run_id or new_run_id(),  # type: ignore[arg-type]
                        concurrency=args.concurrency, speed=args.speed, url=args.url)
        print(f"eval {runner.run}: {len(runner.jobs())} call(s) on {', '.join(arms)}", file=sys.stderr)
        await runner.run_all()
        summary = build_summary(runner.run, await store.query_eval_results(runner.run),
                                pricing_from_config(config))
    finally:
        await store.close()
    print(format_summary(summary), file=out)
    print(f"\nstored as eval run {runner.run}: `switchboard report --evals {runner.run}`", file=out)
    return summary


def run_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`switchboard report --evals RUN [--json] [--html FILE] [--gate RULE]`."""
    import json
    from pathlib import Path

    from switchboard.report.evals import build_summary, check_gates, format_summary, summary_json
    from switchboard.report.evals_html import summary_html

    out = out or sys.stdout
    gates = _gates(args.gate, "report")
    if gates is None:
        return 2
    run_id, rows = asyncio.run(_load_run(args.db, args.evals))
    if not rows:
        print(f"switchboard report: no eval run {run_id!r} in the call store", file=sys.stderr)
        return 2
    summary = build_summary(run_id, rows, pricing=_pricing(args))
    if args.json:
        print(json.dumps(summary_json(summary), indent=2, default=str), file=out)
    else:
        print(format_summary(summary), file=out)
    if getattr(args, "html", None):
        Path(args.html).write_text(summary_html(summary), encoding="utf-8")
        print(f"switchboard report: wrote {args.html}", file=sys.stderr)
    failures = check_gates(summary, gates)
    for failure in failures:
        print(f"switchboard report: gate failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


async def _load_run(db: str | None, run_id: str) -> tuple[str, list[dict]]:
    """The run's results (`latest`: the last run's), each with its call's turns."""
    from switchboard.store import CallStore

    store = CallStore(db)
    await store.open()
    try:
        if run_id == "latest":
            runs = await store.eval_runs(1)
            if not runs:
                return run_id, []
            run_id = runs[0]
        return run_id, await store.query_eval_results(run_id)
    finally:
        await store.close()


def _pricing(args: argparse.Namespace) -> dict:
    from switchboard.report import load_pricing

    try:
        return load_pricing(getattr(args, "config", None))
    except Exception:  # no pipeline file: costs show as unpriced
        return {}
