"""Progress over images, for the terminal and for log files; it imports no deep-learning library,
so torch-free commands (predicting with an exported model) can show it too."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

REPORT_EVERY_S = 60.0  # outside a terminal: at most one progress line a minute
LONG_S = 2.0  # outside a terminal: work shorter than this finishes without a line


@contextmanager
def image_progress(total: int, description: str, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Progress over `total` images; yields `update(count)`.

    In a terminal, a tqdm bar that disappears when done. Elsewhere (a log file, CI) a bar's
    carriage returns would pile up into one huge line, so: a plain line to stderr at most once a
    minute, and one when work that took a while (LONG_S) finishes.
    """
    if not enabled:
        yield lambda count: None
        return
    if sys.stderr.isatty():
        with tqdm(total=total, desc=description, unit="img", leave=False) as bar:
            yield bar.update
        return
    start = last = time.perf_counter()
    done = 0

    def update(count: int) -> None:
        nonlocal done, last
        done += count
        now = time.perf_counter()
        if now - last >= REPORT_EVERY_S and done < total:
            last = now
            print(f"{description}: {done:,}/{total:,} images, {now - start:.0f} s", file=sys.stderr, flush=True)

    yield update
    elapsed = time.perf_counter() - start
    if elapsed >= LONG_S:
        print(f"{description}: {done:,} images in {elapsed:.1f} s ({done / elapsed:.1f} img/s)",
              file=sys.stderr, flush=True)
