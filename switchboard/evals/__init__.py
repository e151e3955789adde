"""Evals that judge what callers hear: simulated callers placed on pipelines, checked and judged.

    scenarios.py   evals.yaml: scenarios (persona, goal, facts, speech, script, expect, judged), judge, caller
    runner.py      `switchboard eval`: the calls over Twilio's wire format, N at a time, stored and tagged
    checks.py      the deterministic checks of one call (tools and arguments, end_call, transfer, turns...)
    judge.py       the LLM judge: JSON against a schema, retried once, else "unjudged" with the reason
    simulated.py   the LLM caller: hears the bot through a recogniser, speaks through a voice
    replay.py      recorded calls replayed into another pipeline, paired turn by turn, judged pairwise
    (the run's summary, its statistics and `--gate` are report/evals.py and report/eval_stats.py: the
    dashboard shows eval runs too)
"""

from switchboard.evals.cli import add_arguments, add_report_arguments, run, run_report

__all__ = ["add_arguments", "add_report_arguments", "run", "run_report"]
