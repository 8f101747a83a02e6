"""The ``hps`` command: run the service and workers, submit studies, watch them.

Each command group is a module of this package (``docs/architecture.md`` lists them); this one
only assembles them into one typer app, in the order ``hps --help`` lists them.

Exit codes: 0 success, 1 the study finished without a single completed trial, 2 an error
(bad spec, service unreachable, bad option).
"""

from __future__ import annotations

import typer

from hps.cli import dashboard, gate, report, serve, studies, token, trials, worker

app = typer.Typer(
    help="hps: hyperparameter search for optimizer studies (which optimizer, lr and warmup?).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("report")(report.report)
app.command("gate")(gate.gate)
app.command("trials")(trials.trials)
app.command("dashboard")(dashboard.dashboard)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("submit")(studies.submit)
app.command("status")(studies.status)
app.command("cancel")(studies.cancel)
app.command("up")(serve.up)
app.add_typer(token.app, name="token")

__all__ = ["app"]
