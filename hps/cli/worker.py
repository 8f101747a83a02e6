"""``hps worker``: lease trials and train them; ``--gpus`` / ``--processes`` start several."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from hps.cli.common import AUTH_HINTS, DEFAULT_URL, TokenOption, UrlOption, console
from hps.cli.common import fail as _fail
from hps.client import ApiError, Client, HpsClientError
from hps.credentials import CredentialsError, resolve_token


def worker(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = "auto",
    once: Annotated[bool, typer.Option("--once", help="Run one trial, then exit.")] = False,
    max_trials: Annotated[
        int | None, typer.Option(min=1, help="Exit after this many trials.")
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit as soon as the service has no work.")
    ] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between asks when idle.")] = 2.0,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="HPS_WORKER_THREADS",
            help="CPU threads for torch. Default: torch's choice (every core); with several "
            "workers on one machine give each cores / workers (`hps up` does).",
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="'all' or indices such as 0,1: one worker process per GPU, each with its own "
            "CUDA_VISIBLE_DEVICES (and cores / GPUs threads unless --threads is given)."
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Start this many CPU worker processes, each with cores / N threads (unless "
            "--threads is given); stopping this command stops them all.",
        ),
    ] = None,
) -> None:
    """Lease trials from the service and train them until stopped (SIGTERM/Ctrl-C)."""
    if device not in ("auto", "cpu", "cuda"):
        raise _fail(f"--device must be auto, cpu or cuda, not {device!r}")
    if processes is not None:
        if gpus is not None or device == "cuda":
            raise _fail("--processes starts CPU workers; for one worker per GPU use --gpus")
        _worker_processes(processes, url, token, once, max_trials, burst, poll, threads)
        return
    if gpus is not None:
        _worker_per_gpu(gpus, url, token, once, max_trials, burst, poll, threads)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    from hps.workers_per_host import other_workers, oversubscription_warning

    warning = oversubscription_warning(threads, other_workers())
    if warning:
        logging.getLogger("hps.worker").warning(warning)
    import torch

    from worker.device import DeviceUnavailable, choose_device
    from worker.loop import Worker

    if threads:
        torch.set_num_threads(threads)
    try:
        chosen = choose_device(device)  # type: ignore[arg-type]
    except DeviceUnavailable as error:
        raise _fail(str(error)) from None
    try:
        resolved = resolve_token(token)
    except CredentialsError as error:
        raise _fail(str(error)) from None
    with Client(url, token=resolved) as client:
        w = Worker(client, chosen, max_trials=1 if once else max_trials, burst=burst, poll_s=poll)
        w.install_signal_handlers()
        try:
            w.run()
        except HpsClientError as error:
            hint = AUTH_HINTS.get(error.status) if isinstance(error, ApiError) else None
            raise _fail(str(error) if hint is None else f"{error}\n{hint}") from None
        console.print(repr(w))


def _worker_per_gpu(
    gpus: str,
    url: str,
    token: str | None,
    once: bool,
    max_trials: int | None,
    burst: bool,
    poll: float,
    threads: int | None,
) -> None:
    import torch

    from hps.workers_per_host import GpuSpecError, child_commands, parse_gpus, supervise

    try:
        indices = parse_gpus(gpus, torch.cuda.device_count())
    except GpuSpecError as error:
        raise _fail(str(error)) from None
    args = _child_args(url, token, once, max_trials, burst, poll)
    console.print(f"starting {len(indices)} worker(s) on GPU(s) {', '.join(map(str, indices))}")
    raise typer.Exit(supervise(child_commands(args, indices, threads)))


def _worker_processes(
    processes: int,
    url: str,
    token: str | None,
    once: bool,
    max_trials: int | None,
    burst: bool,
    poll: float,
    threads: int | None,
) -> None:
    from hps.workers_per_host import cpu_child_commands, supervise

    children = cpu_child_commands(
        _child_args(url, token, once, max_trials, burst, poll), processes, threads
    )
    console.print(f"starting {processes} CPU worker(s) with {children[0][0][-1]} thread(s) each")
    raise typer.Exit(supervise(children))


def _child_args(
    url: str, token: str | None, once: bool, max_trials: int | None, burst: bool, poll: float
) -> list[str]:
    """The options every child of ``--gpus`` or ``--processes`` is started with."""
    # The token travels in the environment, never on a command line (where `ps` shows it).
    if token:
        os.environ["HPS_TOKEN"] = token
    args = ["--url", url, "--poll", str(poll)]
    args += ["--once"] if once else []
    args += ["--burst"] if burst else []
    args += ["--max-trials", str(max_trials)] if max_trials else []
    return args
