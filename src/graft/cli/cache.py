"""`graft cache`: list, check, prune and clear the cache of backbone features."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import GraftError
from .options import cache_dir_option
from .render import console, interrupts_explained

cache_app = typer.Typer(help="Show, check or clear the cache of backbone features.", no_args_is_help=True)


def _cache():
    """The feature cache of the folder that --cache-dir names (cache_dir_option), else graft's default."""
    from ..features import FeatureCache

    return FeatureCache()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f}"


@cache_app.command("ls")
@cache_dir_option
def cache_ls() -> None:
    """List cached feature sets, marking damaged ones, and the partial builds (in progress or abandoned)."""
    from ..features.partial import format_age

    cache = _cache()
    entries = cache.entries()
    partials = cache.partials()
    table = Table(title=f"Feature cache: {escape(str(cache.root))}")
    table.add_column("key", no_wrap=True, min_width=24)  # whole: `graft cache rm KEY` needs it
    for column in ("what", "images", "dim", "MB", "state"):
        table.add_column(column)
    for entry in entries:
        state = f"[red]damaged: {escape(entry.problem)}[/]" if entry.problem else "ok"
        table.add_row(entry.key, escape(entry.description), str(entry.count), str(entry.dim), _mb(entry.size_bytes), state)
    console.print(table)
    damaged = sum(1 for entry in entries if entry.problem)
    line = f"{len(entries)} entries, {sum(e.size_bytes for e in entries) / 1e6:.1f} MB"
    if damaged:
        line += f"; {damaged} damaged (`graft cache verify --fix` removes them, or they are rebuilt when next used)"
    if entries:  # ls reads no feature's bytes, to stay quick: its "ok" is of the files, shapes and sizes
        line += ("; state from the files, shapes and sizes (`graft cache verify` also checks every feature's "
                 "checksum)")
    console.print(line)
    if partials:
        now = time.time()
        table = Table(title="Partial builds")
        table.add_column("folder", overflow="fold")
        for column in ("started", "MB", "state"):
            table.add_column(column)
        for partial in partials:
            table.add_row(escape(partial.name), f"{format_age(now - partial.started)} ago", _mb(partial.size_bytes),
                          escape(partial.state))
        console.print(table)
        abandoned = sum(1 for partial in partials if partial.abandoned)
        console.print(f"{len(partials)} partial builds, {abandoned} abandoned"
                      + (" (`graft cache rm` removes them)" if abandoned else ""))


@cache_app.command("rm")
@cache_dir_option
def cache_rm(
    keys: Annotated[Optional[list[str]], typer.Argument(help="Keys to remove (default: all).")] = None,
) -> None:
    """Remove cached feature sets: all of them without KEYS, and abandoned partial builds, keeping
    those other graft processes are still writing. The exit status is 1 when a KEY named is not in
    the cache."""
    from ..features.partial import format_age

    cache = _cache()
    removal = cache.remove(keys or None)
    line = f"Removed {removal.entries} cache entries"
    if removal.partials:
        line += f" and {removal.partials} abandoned partial builds"
    console.print(line + ".")
    if removal.kept:
        now = time.time()
        console.print(f"Kept {len(removal.kept)} partial builds still being written (another graft is extracting):")
        for partial in removal.kept:
            console.print(f"  {escape(partial.name)}: {escape(partial.state)}, started {format_age(now - partial.started)} ago")
    if removal.failed:
        raise GraftError(f"Could not remove {'; '.join(removal.failed)}. Check the permissions of {cache.root}.")
    if removal.missing:
        console.print(f"[bold red]Not in the cache[/] ({escape(str(cache.root))}): {escape(', '.join(removal.missing))}; "
                      "`graft cache ls` lists the keys there are.")
        sys.exit(1)


@cache_app.command("verify")
@cache_dir_option
def cache_verify(
    fix: Annotated[bool, typer.Option("--fix", help="Remove the damaged entries and abandoned partial builds.")] = False,
) -> None:
    """Check every entry (files, shapes, types, checksum); list the damaged ones, and with --fix remove them.

    The exit status is 1 when damage was found and is still there (without --fix, or where --fix
    could not remove it); 0 when every entry is sound, or --fix removed all the damage."""
    cache = _cache()
    count = len(cache.entries())
    bad = cache.verify()
    abandoned = [partial for partial in cache.partials() if partial.abandoned]
    if not bad and not abandoned:
        console.print(f"Checked {count} entries in {escape(str(cache.root))}: no damaged entries.")
        return
    table = Table(title=f"Damaged entries in {escape(str(cache.root))}")
    table.add_column("key", overflow="fold", min_width=24)
    for column in ("what", "problem"):
        table.add_column(column)
    for entry in bad:
        table.add_row(entry.key, escape(entry.description), escape(entry.problem or ""))
    for partial in abandoned:
        table.add_row(escape(partial.name), "partial build", escape(partial.state))
    console.print(table)
    console.print(f"Checked {count} entries: {len(bad)} damaged, {len(abandoned)} abandoned partial builds.")
    if not fix:
        console.print("Run `graft cache verify --fix` to remove them (a damaged entry is also rebuilt when next used).")
        sys.exit(1)
    removal = cache.remove([entry.key for entry in bad] + [partial.name for partial in abandoned])
    console.print(f"Removed {removal.entries} damaged entries and {removal.partials} abandoned partial builds.")
    if removal.failed:
        raise GraftError(f"Could not remove {'; '.join(removal.failed)}. Check the permissions of {cache.root}.")


@cache_app.command("prune")
@cache_dir_option
def cache_prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")] = False,
) -> None:
    """Remove the feature sets that newer ones hold whole: an entry every image of which (the same
    file, or the same bytes) a newer entry with the same backbone, preprocessing, engine and
    precision holds, as after images were added to the data. Nothing is extracted again for them:
    their images' features come back from the newer entry. Augmented views are never pruned."""
    with interrupts_explained(lambda: "each entry is removed whole, so the cache works as it is; run graft cache "
                                      "prune again to remove the rest."):
        _prune(_cache(), dry_run)


def _prune(cache, dry_run: bool) -> None:
    """cache prune's work: list, then remove, the entries newer ones hold whole."""
    gone = cache.superseded()
    size = sum(entry.size_bytes for entry in gone)
    if not gone:
        console.print(f"Nothing to prune in {escape(str(cache.root))}: no entry is held whole by a newer one.")
        return
    for entry in gone:
        console.print(f"  {entry.key}  {escape(entry.description)}, {entry.count} images, {_mb(entry.size_bytes)} MB")
    if dry_run:
        console.print(f"Would remove {len(gone)} cache entries ({_mb(size)} MB) that newer entries hold whole.")
        return
    removal = cache.remove([entry.key for entry in gone])
    console.print(f"Removed {removal.entries} cache entries ({_mb(size)} MB) that newer entries hold whole.")
    if removal.failed:
        raise GraftError(f"Could not remove {'; '.join(removal.failed)}. Check the permissions of {cache.root}.")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
