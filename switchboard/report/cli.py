"""`switchboard report`: vendors side by side, from the turns in the call store.

The command line: its options, one report (table, JSON, HTML) or one per configuration version.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from switchboard.report.reading import Progress, load, load_pricing, parse_since
from switchboard.report.rows import Pricing, build_report
from switchboard.report.table import format_table, report_json


def by_config_version(turns: list[dict[str, Any]], shadows: list[dict[str, Any]], pricing: Pricing | None,
                      filters: dict[str, str | None], as_json: bool = False) -> str:
    """One report per configuration version (`calls.config_version`: the pipeline's settings' hash),
    oldest first, each headed by its version, the file's hash and when its turns were."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for turn in turns:
        groups.setdefault(turn.get("config_version"), []).append(turn)
    sections = []
    for version, group in groups.items():
        files = sorted({turn.get("config_file") or "?" for turn in group})
        report = build_report(group, [s for s in shadows if s.get("config_version") == version], pricing,
                              filters={**filters, "config_version": version})
        first, last = group[0]["created_at"], group[-1]["created_at"]
        sections.append((version or "unrecorded", files, first, last, report))
    if as_json:
        return json.dumps([{"config_version": version, "config_files": files, "first": first.isoformat(),
                            "last": last.isoformat(), **report_json(report)}
                           for version, files, first, last, report in sections], indent=2) + "\n"
    return "\n".join(f"config {version} (file {', '.join(files)}): turns {first:%Y-%m-%d %H:%M} to "
                     f"{last:%Y-%m-%d %H:%M} UTC\n{format_table(report)}"
                     for version, files, first, last, report in sections) or "no turns\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options, for the CLI's `report` subcommand."""
    parser.add_argument("--since", help="only turns from this long ago (24h, 7d, 30m) or this ISO date on")
    parser.add_argument("--pipeline", help="only calls on this pipeline")
    parser.add_argument("--variant", help="only calls assigned this A/B variant")
    parser.add_argument("--db", help="database URL or SQLite path (default: switchboard.db)")
    parser.add_argument("--config",
                        help="pipeline.yaml whose `pricing:` prices the calls (default: as for serve)")
    parser.add_argument("--config-version", action="store_true",
                        help="split the figures by the configuration that answered the calls (the hash of "
                             "the pipeline's settings each call recorded; it changes with a reload)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--html", metavar="PATH",
                        help="also write the report with charts to this HTML file (opens offline)")


def run(args: argparse.Namespace, pricing: Pricing | None = None, out: TextIO | None = None) -> int:
    """Run the report for parsed `args` (see add_arguments); `pricing` instead of the config's.
    Returns the exit status. Warnings and progress go to stderr, the table or JSON to `out` (stdout)."""
    out = out or sys.stdout
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"switchboard report: {exc}", file=sys.stderr)
        return 2
    if pricing is None:
        pricing = load_pricing(getattr(args, "config", None))
    try:
        turns, shadows = asyncio.run(load(args.db, since, args.pipeline, args.variant,
                                          progress=Progress(sys.stderr),
                                          evals=getattr(args, "include_evals", False)))
    except Exception as exc:  # a missing file, an unreachable server, a newer schema
        print(f"switchboard report: cannot read the call store: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    filters = {"since": since.isoformat() if since else None, "pipeline": args.pipeline,
               "variant": args.variant}
    if getattr(args, "config_version", False):
        out.write(by_config_version(turns, shadows, pricing, filters, as_json=args.json))
        return 0
    report = build_report(turns, shadows, pricing, filters=filters)
    if args.json:
        out.write(json.dumps(report_json(report), indent=2) + "\n")
    else:
        out.write(format_table(report))
    html_path = getattr(args, "html", None)
    if html_path:
        from switchboard.report.html import report_page

        try:
            Path(html_path).write_text(report_page(report, turns, shadows), encoding="utf-8")
        except OSError as exc:
            print(f"switchboard report: cannot write {html_path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"switchboard report: wrote {html_path}", file=sys.stderr)
    return 0


def main_report(argv: Sequence[str] | None = None, pricing: Pricing | None = None,
                out: TextIO | None = None) -> int:
    """`switchboard report [--since …] [--pipeline …] [--variant …] [--db …] [--config …] [--json]
    [--html PATH]`."""
    parser = argparse.ArgumentParser(prog="switchboard report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv), pricing, out)
