"""`graft serve RUN`: the trained classifier as a web service with a page to try it (graft.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..errors import GraftError
from .options import Engine, cache_dir_option
from .render import console, error_console

# The defaults, repeated here so that `graft --help` never imports FastAPI or torch; a test checks
# that they equal graft.serve's.
MAX_MB, MAX_IMAGES, MAX_BATCH = 20.0, 32, 32


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the `graft` app."""
    app.command("serve")(serve)


@cache_dir_option
def serve(
    run: Annotated[Path, typer.Argument(help="The run folder (or a folder with model.safetensors + graft.json), or a model.onnx, model.xml or model.pt from `graft export` (without activation maps).")],
    host: Annotated[str, typer.Option(help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 is every interface (anyone on the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port; the address is printed).")] = 8000,
    max_mb: Annotated[float, typer.Option("--max-mb", help="Largest request body in MB; larger ones get 413.")] = MAX_MB,
    max_images: Annotated[int, typer.Option("--max-images", help="Most images in one request; more get 413.")] = MAX_IMAGES,
    batch_window_ms: Annotated[Optional[float], typer.Option("--batch-window-ms", help="How long the model waits to batch concurrent requests together; 0: no batching. Default: 5 with the torch engine, where batching measured faster, 0 with ONNX Runtime, where it was slower (docs/benchmarks.md, 'Serving').")] = None,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most images in one batched forward pass.")] = MAX_BATCH,
    engine: Engine = "auto",
    access_log: Annotated[bool, typer.Option("--access-log", help="Print a line per request.")] = False,
) -> None:
    """Serve RUN (or an exported model) over HTTP: a web page to drop images on, POST /predict for programs, GET /model and /health."""
    if max_mb <= 0:
        raise GraftError(f"--max-mb {max_mb:g}: use a positive size in MB, e.g. 20.")
    if max_images < 1:
        raise GraftError(f"--max-images {max_images}: use 1 or more.")
    if batch_window_ms is not None and not 0 <= batch_window_ms <= 1000:
        raise GraftError(f"--batch-window-ms {batch_window_ms:g}: use 0 (no batching) to 1000; a few ms is usual.")
    if max_batch < 1:
        raise GraftError(f"--max-batch {max_batch}: use 1 or more.")
    from ..serve.server import ALL_INTERFACES, bind, url

    sock = bind(host, port)  # before loading the model: a port in use is said at once
    try:
        from ..loader import load
        from ..serve import create_app
        from ..serve import run as run_server

        predictor = load(run, engine=engine)
        app = create_app(predictor, max_mb=max_mb, max_images=max_images, batch_window_ms=batch_window_ms,
                         max_batch=max_batch, name=run.resolve().name)
    except BaseException:
        sock.close()
        raise
    if host in ALL_INTERFACES:
        error_console.print(f"[bold yellow]warning:[/] listening on every interface ({escape(host or '*')}): anyone who "
                            "can reach this machine can use the model. Use --host 127.0.0.1 to keep it to this machine.")
    info = predictor.metadata
    batcher = app.state.batcher
    batching = f"batching {batcher.window_ms:g} ms" if batcher.batching else "no batching"
    labels = ", several labels per image" if predictor.multilabel else ""
    what = (f"{info['backbone']}, {info['strategy']}, " if info.get("backbone") else "") + f"{len(predictor.classes)} classes{labels}, {batcher.engine}, {batching}"
    console.print(f"Serving {escape(str(run))} ({escape(what)}) at [bold]{escape(url(sock))}[/]  (Ctrl-C to stop)", soft_wrap=True)
    console.file.flush()
    run_server(app, sock, access_log=access_log)
