"""Every option of a training run, declared once.

`TrainConfig` is frozen and validated; its groups follow the questions a user answers:

- `strategy`: which network, which weights, what trains (see graft.strategies);
- `data`: how the images are split and sized;
- `optim`: how long and how fast it trains;
- `augment`: how training images are varied;
- `runtime`: how this machine runs it (resolved into a graft.runtime.Runtime);
- `output`: where the run folder goes and what it holds.

Each field carries its help text and its check, so the `graft train` flags, their help and their
defaults are generated from here (cli/options.py), `graft.train(data, config, **overrides)` takes
the same names, `compare` varies a config with `replace`, and the run record stores it whole, so
`graft train --config runs/NAME/graft.json` replays a run. Adding an option is adding one field.

This module imports nothing heavy: the CLI builds its help from it without loading torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import shlex
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .errors import GraftError

DEFAULT_BACKBONE = "tf_efficientnet_lite0"
AUTO = "auto"  # --strategy auto: measure the data, then follow graft.advise's recommendation


# --- checks: each returns what is wrong (None when the value is fine) -----------------------------

def positive(value) -> str | None:
    return None if value is None or value > 0 else "must be greater than 0"


def at_least(minimum: float) -> Callable[[Any], str | None]:
    def check(value) -> str | None:
        return None if value is None or value >= minimum else f"must be at least {minimum:g}"
    return check


def fraction(value) -> str | None:
    return None if value is None or 0.0 < value < 1.0 else "a fraction, greater than 0 and less than 1"


def probability(value) -> str | None:
    return None if 0.0 <= value <= 1.0 else "a probability, from 0 to 1"


def below_one(value) -> str | None:
    return None if 0.0 <= value < 1.0 else "from 0 up to, not including, 1"


def crop_fraction(value) -> str | None:
    return None if 0.0 < value <= 1.0 else "the fraction of the image the random crop keeps at least, in (0, 1]"


def known_share(value) -> str | None:
    """--known-recall, by graft.unknown's own check."""
    from .unknown import check_known_recall

    try:
        check_known_recall(value)
    except GraftError:
        return ("a share strictly between 0 and 1, such as 0.95: the share of known images kept as known "
                "(the threshold of unknown images is set on val to keep it)")
    return None


def one_of(*choices: str) -> Callable[[Any], str | None]:
    def check(value) -> str | None:
        return None if value in choices else f"choose one of {', '.join(choices)}"
    return check


# The largest input side graft accepts. ImageNet backbones were trained at 224-600 px, and a
# backbone's activations grow with the square of the side: --img-size 100000 asked for 30 GB in one
# allocation and ended in a traceback (issue 24).
MAX_IMAGE_SIDE = 2048


def image_side(value) -> str | None:
    if value is None or 16 <= value <= MAX_IMAGE_SIDE:
        return None
    return (f"the input side in pixels, from 16 to {MAX_IMAGE_SIDE} (ImageNet backbones were trained at 224-600; "
            "memory grows with its square)")


def folder_name(value) -> str | None:
    """A run folder's name: one folder inside --out, never a path that leads elsewhere."""
    if value is None:
        return None
    if not value.strip() or value.strip() in (".", "..") or any(sep in value for sep in ("/", "\\", "\0")):
        return ("a folder name inside --out, without / or \\ (to put runs elsewhere, use --out; "
                "to group runs, --out runs/GROUP)")
    return None


def parse_duration(value: str) -> float | None:
    """Seconds in "90s", "10m", "1.5h" or "600"; None for "0" or "none" (no limit). ValueError otherwise."""
    text = str(value).strip().lower()
    if text in ("0", "none", "off"):
        return None
    number, unit = (text[:-1], text[-1]) if text[-1:] in "smh" else (text, "s")
    seconds = float(number) * {"s": 1, "m": 60, "h": 3600}[unit]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(value)
    return seconds


def spoken_duration(seconds: float) -> str:
    """Seconds as graft says them in a message: "95 s", "4.2 min"."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def duration(value) -> str | None:
    try:
        parse_duration(value)
    except (ValueError, IndexError):
        return "a duration such as 90s, 10m or 2h (0 or none: no limit)"
    return None


def device_count(value) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 1 else "use 1 or more"
    if value == "auto" or (isinstance(value, str) and value.replace(",", "").isdigit()):
        return None
    return "a number of devices (1, 2, ...), auto, or GPU ids such as 0,1"


def option(default, help: str | Callable[[], str], *, check: Callable[[Any], str | None] | None = None,
           flag: str | None = None, short: str | None = None, cli: bool = True):
    """A config field: its default, its help, the check its value must pass, and its CLI flag.

    `flag` defaults to the field name with dashes (`head_epochs` -> `--head-epochs`); `cli=False`
    keeps a field out of the generated command line. Floats must also be finite, always.
    """
    return field(default=default, metadata={"help": help, "check": check, "flag": flag, "short": short, "cli": cli})


class Group:
    """A frozen group of options whose values are checked when it is made."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for spec in _fields(type(self)):
            value = getattr(self, spec.name)
            kind = hints[spec.name]
            if float in _types(kind) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)  # JSON and Python callers write 1 for 1.0
                object.__setattr__(self, spec.name, value)
            if str in _types(kind) and isinstance(value, os.PathLike):
                value = os.fspath(value)  # folders and files are kept as text: the record is JSON
                object.__setattr__(self, spec.name, value)
            problem = _type_problem(value, kind)
            if problem is None and isinstance(value, float) and not math.isfinite(value):
                problem = "must be a finite number"
            if problem is None and spec.metadata.get("check") is not None:
                problem = spec.metadata["check"](value)
            if problem:
                raise GraftError(f"{flag_of(spec)} {value!r}: {problem}.")


@dataclass(frozen=True)
class DataOptions(Group):
    val_split: float = option(0.2, "Validation fraction when DATA has no val/ folder.", check=fraction)
    img_size: int | None = option(None, "Input size in pixels (default: the backbone's own; 64-96 is quick).",
                                  check=image_side)
    seed: int = option(0, "Random seed (split, initialisation, augmentation).", check=at_least(0))
    task: str = option("auto", "single (one class per image), multilabel (several labels per image: a label file), or "
                               "auto: multi-label when the data gives any image several labels or none.",
                       check=one_of("auto", "single", "multilabel"))
    threshold: float | None = option(None, "Multi-label data: one decision threshold for every class (default: each "
                                           "class's own, chosen on val for its best F1).", check=fraction)
    known_recall: float = option(0.95, "Single-label data: the share of known val images the threshold of unknown "
                                       "images keeps as known; images scoring above it are answered \"none of the "
                                       "classes\" (graft.unknown).", check=known_share)


@dataclass(frozen=True)
class StrategyOptions(Group):
    strategy: str = option(AUTO, f"{AUTO} (the default: a linear probe first, then fine-tuning where the data and --budget "
                                 "say it pays), or a strategy that `graft strategies` lists.", short="-s")
    budget: str = option("10m", "auto: time for the whole run (e.g. 90s, 10m, 2h; 0: no limit). Fine-tuning runs only "
                                "when its measured epochs fit in what is left.", check=duration)
    backbone: str = option(DEFAULT_BACKBONE, "Any timm model name (see `graft backbones`), or auto: the offline "
                                           "EfficientNet-Lite0/1/2 whose features a cross-validated linear probe fits best.",
                           short="-b")
    weights: str = option("imagenet", "imagenet, none (random init), or the path of a .safetensors/.pth file.")
    unfreeze: int = option(2, "partial: how many of the last stages train.", check=at_least(1))
    cut: int = option(-2, "truncate: keep stages 0..K (negative counts from the end).")
    hidden: int | None = option(None, "Units of a hidden layer in the head (default: a linear head).", check=positive)
    dropout: float = option(0.0, "Dropout in the head.", check=below_one)
    train_bn_stats: bool = option(False, "Fine-tuning: update the pretrained BatchNorm statistics (default: keep them).")
    logreg_c: float | None = option(None, "linear-probe: regularisation C (default: chosen by 5-fold cross-validation).",
                                    check=positive)


@dataclass(frozen=True)
class OptimOptions(Group):
    epochs: int = option(5, "Epochs on images (finetune, partial, scratch).", check=at_least(1))
    head_epochs: int = option(15, "Epochs of the new head on cached features.", check=at_least(1))
    lr: float = option(1e-3, "Learning rate of the head.", check=positive)
    backbone_lr_ratio: float = option(0.1, "Backbone learning rate as a fraction of --lr.", check=positive)
    label_smoothing: float = option(0.1, "Label smoothing of the training loss.", check=below_one)
    class_weight: str = option("auto", "balanced: weight each class by train images / (classes x its own), in the loss "
                                       "and the logistic fit, so rare classes count as much as common ones; none; auto: "
                                       "balanced where the audit's imbalance check flags a class.",
                               check=one_of("auto", "none", "balanced"))
    sampler: str = option("shuffle", "How training batches are drawn: shuffle (each image once an epoch); balanced "
                                     "(each class equally often, a rare class's images repeated; the loss is then "
                                     "unweighted, as the batches are balanced already; the linear probe's logistic fit "
                                     "still follows --class-weight).",
                          check=one_of("shuffle", "balanced"))
    weight_decay: float = option(1e-4, "AdamW weight decay.", check=at_least(0))
    patience: int = option(5, "Early stopping: epochs without improvement.", check=at_least(1))


@dataclass(frozen=True)
class AugmentOptions(Group):
    augment: bool = option(True, "Augment training images (random resized crop, flip, jitter).")
    crop_scale: float = option(0.35, "Smallest area fraction the random crop keeps.", check=crop_fraction)
    hflip: float = option(0.5, "Probability of a horizontal flip.", check=probability)
    color_jitter: float = option(0.0, "Brightness/contrast/saturation jitter (0: none).", check=at_least(0))
    views: int = option(3, "Augmented views per image cached for the head phase.", check=at_least(1))

    def to_augment(self):
        """The data.transforms.Augment these options describe, or None without augmentation."""
        if not self.augment:
            return None
        from .data.transforms import Augment

        return Augment(scale=(self.crop_scale, 1.0), hflip=self.hflip, color_jitter=self.color_jitter)


@dataclass(frozen=True)
class RuntimeOptions(Group):
    precision: str = option("auto", "auto, 32 or bf16 (auto: bf16 only where the CPU or GPU computes it natively).",
                            check=one_of("auto", "32", "bf16"))
    workers: int | None = option(None, "Data-loading processes (default: cores - 1, up to 8; none on 2 cores or fewer).",
                                 check=at_least(0))
    batch_size: int = option(32, "Images per batch.", check=at_least(1))
    devices: int | str = option(1, "Devices (or processes on CPU) for Lightning: a number, auto, or GPU ids.",
                                check=device_count)
    num_nodes: int = option(1, "Machines for distributed training.", check=at_least(1))
    engine: str = option("auto", "What runs the frozen backbone's passes (features, predict, evaluate): auto, torch, "
                                 "onnxruntime or openvino (auto: ONNX Runtime on CPUs where it is faster, torch on GPUs).",
                         check=one_of("auto", "torch", "onnxruntime", "openvino"))

    def resolve(self, *, progress: bool = True):
        """The graft.runtime.Runtime these options give on this machine."""
        from .runtime import Runtime

        return Runtime.resolve(precision=self.precision, workers=self.workers, batch_size=self.batch_size,
                               devices=self.devices, num_nodes=self.num_nodes, progress=progress, engine=self.engine)


@dataclass(frozen=True)
class OutputOptions(Group):
    out: str = option("runs", "Folder for run folders.")
    name: str | None = option(None, "Run folder name inside --out (default: strategy-date-time).", check=folder_name)
    cache_dir: str | None = option(None, "Folder for every file graft caches: backbone features, traced graphs, run "
                                          "exports, the images found readable (default: $GRAFT_CACHE, else ~/.cache/graft).")
    report: bool = option(True, "Write report.html and report.md in the run folder (curves, confusion matrices, "
                                "mistakes with activation maps, audit).")
    audit: bool = option(True, "Audit the data (duplicates, imbalance, likely mislabelled images) with the pretrained "
                               "backbone's features, for the report and audit.json.")


GROUPS: dict[str, type[Group]] = {
    "strategy": StrategyOptions,
    "data": DataOptions,
    "optim": OptimOptions,
    "augment": AugmentOptions,
    "runtime": RuntimeOptions,
    "output": OutputOptions,
}


@dataclass(frozen=True)
class TrainConfig:
    """All the options of one `graft.train` run; see each group for its fields."""

    strategy: StrategyOptions = field(default_factory=StrategyOptions)
    data: DataOptions = field(default_factory=DataOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    augment: AugmentOptions = field(default_factory=AugmentOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    output: OutputOptions = field(default_factory=OutputOptions)

    @classmethod
    def from_options(cls, **options) -> TrainConfig:
        """A config from flat option names (`lr=0.01, strategy="partial"`), the rest at defaults."""
        return cls().replace(**options)

    def replace(self, **options) -> TrainConfig:
        """A copy with some options changed, by their flat names: `config.replace(epochs=3)`."""
        changes: dict[str, dict] = {}
        for name, value in options.items():
            changes.setdefault(_group_of(name), {})[name] = value
        return dataclasses.replace(self, **{group: dataclasses.replace(getattr(self, group), **values)
                                            for group, values in changes.items()})

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name."""
        return {name: getattr(getattr(self, group), name) for name, group in option_groups().items()}

    def command(self, data: str = "DATA") -> str:
        """The `graft train` command line for this config: options left at their defaults omitted.

        One line, quoted for a POSIX shell, so that a user can copy it whole."""
        words = ["graft", "train", shlex.quote(str(data))]
        defaults = TrainConfig().flat()
        for group, spec, _kind in option_fields():
            value = getattr(getattr(self, group), spec.name)
            if value == defaults[spec.name] or not spec.metadata.get("cli", True):
                continue
            flag = flag_of(spec)
            if isinstance(value, bool):
                words.append(flag if value else "--no-" + flag.removeprefix("--"))
            elif value is not None:
                words += [flag, shlex.quote(f"{value:g}" if isinstance(value, float) else str(value))]
        return " ".join(words)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {group: dataclasses.asdict(getattr(self, group)) for group in GROUPS}

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> TrainConfig:
        """The config `to_dict` wrote; unknown groups or options are an error naming them."""
        if not isinstance(data, dict):
            raise GraftError(f"{source}: the config must be a JSON object of groups ({', '.join(GROUPS)}).")
        unknown = set(data) - set(GROUPS)
        if unknown:
            raise GraftError(f"{source}: unknown config group(s) {', '.join(sorted(unknown))}; "
                             f"the groups are {', '.join(GROUPS)}.")
        options: dict[str, Any] = {}
        for group, values in data.items():
            if not isinstance(values, dict):
                raise GraftError(f"{source}: config group {group!r} must be an object of options.")
            for name, value in values.items():
                if option_groups().get(name) != group:
                    raise GraftError(f"{source}: {group}.{name} is not an option of graft {group}.")
                options[name] = value
        return cls.from_options(**options)


@cache
def option_groups() -> dict[str, str]:
    """Flat option name -> its group, for every option (names are unique across groups)."""
    names: dict[str, str] = {}
    for group, cls in GROUPS.items():
        for spec in _fields(cls):
            if spec.name in names:  # a programming error, caught by the test suite
                raise TypeError(f"option {spec.name!r} is declared in both {names[spec.name]} and {group}")
            names[spec.name] = group
    return names


def option_fields() -> list[tuple[str, dataclasses.Field, Any]]:
    """(group, field, type) of every option, in declaration order: what the CLI is generated from."""
    return [(group, spec, _hints(cls)[spec.name]) for group, cls in GROUPS.items() for spec in _fields(cls)]


def flag_of(spec: dataclasses.Field) -> str:
    return spec.metadata.get("flag") or "--" + spec.name.replace("_", "-")


def help_of(spec: dataclasses.Field) -> str:
    text = spec.metadata.get("help", "")
    return text() if callable(text) else text


def _group_of(name: str) -> str:
    try:
        return option_groups()[name]
    except KeyError:
        close = difflib.get_close_matches(name, option_groups(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise GraftError(f"Unknown option {name!r}.{hint} The options are: {', '.join(option_groups())}.") from None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)  # type: ignore[arg-type]  # every Group subclass is a dataclass


def _types(kind) -> tuple:
    return typing.get_args(kind) or (kind,)


def _type_problem(value, kind) -> str | None:
    allowed = _types(kind)
    if value is None:
        return None if type(None) in allowed else "a value is required"
    if isinstance(value, bool):
        return None if bool in allowed else "must be a number or a name, not true/false"
    if any(t is not type(None) and isinstance(value, t) for t in allowed):
        return None
    names = " or ".join("a whole number" if t is int else "a number" if t is float else "text" if t is str
                        else "true/false" if t is bool else "nothing" for t in allowed)
    return f"must be {names}"
