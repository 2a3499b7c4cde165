"""How `graft --help` and every command's help read, at any terminal width.

- The help is Typer's plain layout (`rich_markup_mode=None`: click's), not its Rich panels: an
  option's help stands beside it, or on the next lines where the option is long, so it keeps most
  of an 80-column terminal. Rich's panels gave every option five columns (long flag, short flag,
  `--no-` flag, short `--no-` flag, type), and at 80 columns `graft train`'s help had about 22 left.
- Usage lines in the usual notation: `DATA` required, `[DATA]` optional, `TARGET...` repeated,
  arguments in capitals as the help texts write them (Typer writes `{data}` and `[data]`).
- `graft --help` lists the commands in the order a newcomer uses them (the README's), not in the
  order the modules happened to register them.
"""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

# The README's order: train, ask what to train, use the model, look inside, then the helpers.
ORDER = ("train", "advise", "predict", "evaluate", "explain", "export", "serve", "compare", "audit", "suggest", "similar", "demo",
         "summary", "strategies", "backbones", "cache")


class Group(TyperGroup):
    """The `graft` command: its commands listed in ORDER (any other after them, as registered)."""

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: ORDER.index(name) if name in ORDER else len(ORDER))


class Command(TyperCommand):
    """A graft command: arguments named in capitals, usage as `graft train [OPTIONS] [DATA]`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar is None and param.name:
                param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")

    def invoke(self, ctx):
        """Run the command; Ctrl-C where the command does not say more itself (evaluate, export, audit,
        explain, advise, ...): say so and exit 130, as train and predict do (Typer's own exit is silent)."""
        from .render import interrupts_explained

        with interrupts_explained(lambda: "graft writes each file whole or not at all, so no file was left half "
                                          "written; run the command again."):
            return super().invoke(ctx)

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces


def use_graft_help(app: typer.Typer) -> None:
    """Make every command of `app` (and of its sub-apps, such as `graft cache`) a `Command`, with
    Typer's plain help; call it once every command is registered."""
    app.rich_markup_mode = None
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):  # not a class a command chose for itself
            info.cls = Command
    for group in app.registered_groups:
        if group.typer_instance is not None:
            use_graft_help(group.typer_instance)
