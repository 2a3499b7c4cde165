"""Command-line options generated from graft.config: every flag, its help and its default come from
the `TrainConfig` field of the same name, so an option is declared once for the library and the CLI.

- `config_options(...)` adds config fields as keyword parameters of a Typer command;
- `annotated(name)` gives one field's `Annotated[type, typer.Option]` for a hand-written signature;
- `explicit_options(ctx, values)` keeps the values the user typed (for `--config` replays);
- `cache_dir_option` gives a command `--cache-dir`, the folder of every file graft caches.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..config import TrainConfig, flag_of, help_of, option_fields
from ..runtime import use_cache_dir


def annotated(name: str, *, help: str | None = None):
    """`Annotated[type, typer.Option(...)]` for config field `name` (help text overridable)."""
    for _group, spec, kind in option_fields():
        if spec.name == name:
            return _annotation(spec, kind, help)
    raise KeyError(name)


def config_options(*, only: Iterable[str] | None = None, exclude: Iterable[str] = (),
                   defaults: dict[str, Any] | None = None, help: dict[str, str] | None = None):
    """Decorator: the command also takes these config fields as options (all of them by default).

    The command's own parameters come first; it receives the config options as keyword arguments
    (declare `**options`). `defaults` and `help` change a field's default or help for this command.
    """
    only = None if only is None else list(only)
    exclude, defaults, help = set(exclude), defaults or {}, help or {}

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
               for parameter in inspect.signature(command).parameters.values()
               if parameter.kind is not inspect.Parameter.VAR_KEYWORD]
        taken = {parameter.name for parameter in own}
        fields = {spec.name: (spec, kind, group) for group, spec, kind in option_fields()}
        names = [name for name in (only if only is not None else fields) if name not in exclude and name not in taken]
        added = []
        for name in names:
            spec, kind, _group = fields[name]
            added.append(inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(spec, kind, help.get(name)),
                default=defaults.get(name, spec.default),
            ))

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            for name in names:  # "2" from the command line is 2 devices; "0,1" stays GPU ids
                value = kwargs.get(name)
                if isinstance(value, str) and value.isdigit() and int in typing.get_args(fields[name][1]):
                    kwargs[name] = int(value)
            # The config's checks, here too: a bad value fails before any work, with the same message.
            TrainConfig.from_options(**{name: kwargs[name] for name in names if name in kwargs})
            return command(*args, **kwargs)

        signature = inspect.Signature([*own, *added])
        wrapper.__signature__ = signature  # type: ignore[attr-defined]  # what Typer reads
        wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in signature.parameters.values()}
        wrapper.config_option_names = tuple(names)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def cache_dir_option(command: Callable) -> Callable:
    """Decorator: the command takes `--cache-dir FOLDER` and runs inside
    `graft.runtime.use_cache_dir(FOLDER)`, so every file it caches (features, traced graphs, run
    exports, the readability memo), in this process and those it starts, goes under FOLDER.

    Put it above `config_options`: a command whose config options include `cache_dir` (`graft
    train`, `graft compare`) keeps that option and still receives its value."""
    hints = typing.get_type_hints(command, include_extras=True)
    parameters = [parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
                  for parameter in inspect.signature(command).parameters.values()]
    passed_on = any(parameter.name == "cache_dir" for parameter in parameters)
    if not passed_on:
        at = next((index for index, parameter in enumerate(parameters)
                   if parameter.kind is inspect.Parameter.VAR_KEYWORD), len(parameters))
        parameters.insert(at, inspect.Parameter("cache_dir", inspect.Parameter.KEYWORD_ONLY, annotation=CacheDir,
                                                 default=None))

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        folder = kwargs.get("cache_dir") if passed_on else kwargs.pop("cache_dir", None)
        with use_cache_dir(folder):
            return command(*args, **kwargs)

    wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]  # what Typer reads
    wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return wrapper


def explicit_options(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options among `values` that the user gave on the command line (or in the environment)."""
    # By name: Typer may carry its own copy of click, whose enum is not click.core's.
    typed = ("COMMANDLINE", "ENVIRONMENT")
    return {name: value for name, value in values.items()
            if getattr(ctx.get_parameter_source(name), "name", None) in typed}


def _annotation(spec, kind, help_text: str | None):
    types = [t for t in typing.get_args(kind) or (kind,) if t is not type(None)]
    # A field that takes a number or a name (--devices 2, --devices auto) is read as text.
    cli_type = str if len(types) > 1 else types[0]
    if type(None) in typing.get_args(kind):
        cli_type = Optional[cli_type]
    declarations = [flag_of(spec)] + ([spec.metadata["short"]] if spec.metadata.get("short") else [])
    if types == [bool]:
        declarations = [f"{flag_of(spec)}/--no-{flag_of(spec).removeprefix('--')}"]
    return Annotated[cli_type, typer.Option(*declarations, help=help_text or help_of(spec))]


# Options that commands other than `graft train` declare by hand, with the config's help text.
Backbone = annotated("backbone")
Weights = annotated("weights")
Workers = annotated("workers")
ImgSize = annotated("img_size")
ValSplit = annotated("val_split")
Engine = annotated("engine")
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace the output files named (--out, --csv, -o) where they exist already; without it, "
                        "graft refuses to write over them.")]
CacheDir = Annotated[Optional[Path], typer.Option(
    "--cache-dir", show_default=False,
    help="Folder for every file graft caches: backbone features, traced graphs, run exports, the images found "
         "readable (default: $GRAFT_CACHE, else ~/.cache/graft).")]
