"""The run report: one HTML file with every figure inline, and the same in Markdown.

The report is a list of blocks (headings, text, tables, figures, fragments) rendered twice: to a
self-contained report.html (figures as base64 PNGs, so it can be mailed or attached as one file)
and to report.md (figures as PNG files in report/, for a repository or a notebook).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation import Evaluation, MultiLabelEvaluation
from ..io import write_text_atomic
from ..plotting import write_png
from .cache import figure_png
from .mistakes import Mistake, mistakes_key
from .plots import (
    SPLIT_NAMES,
    confusion_figure,
    cooccurrence_figure,
    curves_figure,
    mistakes_figure,
    precision_recall_figure,
)

if TYPE_CHECKING:
    from ..record import RunMetrics, RunRecord
    from ..strategies import Strategy

HTML_FILE, MARKDOWN_FILE, FIGURES_FOLDER = "report.html", "report.md", "report"

TIMINGS = {"features_s": "features", "head_s": "head", "images_s": "image phase", "audit_s": "audit", "total_s": "total"}


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str  # `backticks` become code


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    first_column_header: bool = False  # a key/value table: keys in bold


@dataclass
class Picture:
    name: str  # file name in report/, without .png
    png: bytes
    alt: str


@dataclass
class Side:
    """Blocks shown side by side in HTML (one after the other in Markdown)."""

    blocks: list


@dataclass
class Fragment:
    """Already rendered content (the data audit renders itself)."""

    html: str
    markdown: str


@dataclass
class LabelScores:
    """A multi-label run's answers for its figures: each split's multi-hot targets (images x classes)
    and, for the splits evaluated, the model's probabilities (a sigmoid per class)."""

    targets: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]


@dataclass
class Report:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


def write_report(
    run_dir: str | Path,
    *,
    record: RunRecord,
    metrics: RunMetrics,
    strategy: Strategy | None = None,
    mistakes: Sequence[Mistake] | None = None,
    audit=None,
    scores: LabelScores | None = None,
) -> tuple[Path, Path]:
    """Write run_dir/report.html and run_dir/report.md (+ run_dir/report/*.png); return both paths.

    `record` and `metrics` are what graft.json and metrics.json hold; `strategy` is the one that
    trained (looked up by the record's name when not given); `mistakes` come from
    `confident_mistakes`; `audit` is a graft.audit AuditResult (None: the report says why not);
    `scores`, for a multi-label run, draws each split's precision-recall curves and the labels'
    co-occurrence.
    """
    from ..strategies import get_strategy
    from .health import training_problems

    plan = strategy or get_strategy(record.strategy)
    run_dir = Path(run_dir)
    report = Report(f"graft run {run_dir.name}")
    report.add(*(Text(f"**{'Error' if problem.is_error else 'Warning'}**: {problem.message}")
                 for problem in training_problems(metrics, record.classes, lr=record.config.optim.lr)))
    report.add(*_header(record, metrics, plan))
    report.add(*_curves(plan, metrics))
    for split, evaluation in metrics.evaluations.items():
        if isinstance(evaluation, Evaluation):
            report.add(*_evaluation(split, evaluation))
        elif isinstance(evaluation, MultiLabelEvaluation):
            report.add(*_multilabel_evaluation(split, evaluation, scores))
    if record.task == "multilabel":
        report.add(*_cooccurrence(record.classes, scores))
    report.add(*_mistakes(mistakes, metrics, source=record.data.source if record.data else None,
                          several=record.task == "multilabel"))
    report.add(*_channels(run_dir))
    report.add(*_audit(audit, plan))
    if record.advice:
        report.add(*_advice(record.advice, ran=record.strategy))
    figures = run_dir / FIGURES_FOLDER
    figures.mkdir(exist_ok=True)
    for block in _flat(report.blocks):
        if isinstance(block, Picture):
            write_png(block.png, figures / f"{block.name}.png")
    html_path, markdown_path = run_dir / HTML_FILE, run_dir / MARKDOWN_FILE
    write_text_atomic(html_path, render_html(report))
    write_text_atomic(markdown_path, render_markdown(report))
    return html_path, markdown_path


# Sections ------------------------------------------------------------------------------------


def _header(record: RunRecord, metrics: RunMetrics, plan: Strategy) -> list:
    counts = record.data.counts if record.data else {}
    classes = record.classes
    size = record.data_config.input_size
    head = record.head
    timings = metrics.timings
    accuracy = lambda value: "no test set" if value is None else f"{value:.1%}"  # noqa: E731
    rows = [
        ["strategy", plan.name + (" (chosen by --strategy auto, see the end)" if record.advice else "")],
        ["what trained", plan.summary],
        ["backbone", f"{record.backbone}, weights: {record.weights}"],
        ["input", f"{size[-1]} x {size[-2]} px"],
        ["head", "linear" if not head.get("hidden") else f"hidden layer of {head['hidden']} units"
                 + (f", dropout {head['dropout']}" if head.get("dropout") else "")],
        ["classes", f"{len(classes)}: {', '.join(classes[:12])}" + (", …" if len(classes) > 12 else "")],
        ["images", ", ".join(f"{split} {counts[split]:,}" for split in ("train", "val", "test") if counts.get(split))],
        *([["val mAP (macro)", accuracy(metrics.val_accuracy)], ["test mAP (macro)", accuracy(metrics.test_accuracy)],
           ["labels per image", ", ".join(f"{split} {evaluation.cardinality:.2f} true, {evaluation.predicted_cardinality:.2f} "
                                          "given" for split, evaluation in metrics.evaluations.items()
                                          if isinstance(evaluation, MultiLabelEvaluation))]]
          if record.task == "multilabel" else
          [["val accuracy", accuracy(metrics.val_accuracy)], ["test accuracy", accuracy(metrics.test_accuracy)]]),
        ["parameters trained", f"{metrics.params.trained:,} of {metrics.params.total:,}"],
        ["time (s)", ", ".join(f"{name} {timings[key]:.1f}" for key, name in TIMINGS.items() if key in timings)],
    ]
    source = record.data.source if record.data else None
    return [Text(f"Data: `{source}`." if source else ""), Table(["", ""], rows, first_column_header=True)]


def _curves(plan: Strategy, metrics: RunMetrics) -> list:
    blocks: list = [Heading("Training curves")]
    history = [asdict(row) for row in metrics.history]
    if not history:
        if plan.head_phase == "logreg" and plan.main_phase is None:
            c = metrics.logreg_c
            return blocks + [Text(f"{plan.name} fits a logistic regression on the cached features in one go"
                                  + (f" (C = {c:g})" if c else "") + ": there are no epochs to plot.")]
        return blocks + [Text("This run recorded no epochs.")]
    blocks.append(Text("One point per epoch. The head phase trains the new head on cached features (shaded); "
                       "the image phase trains the backbone's chosen stages on images. The star marks the best "
                       "validation accuracy: the epoch whose weights were kept."))
    png, _ = figure_png("curves", {"history": history}, lambda: (curves_figure({"run": history}), {}))
    return blocks + [Picture("curves", png, "Loss, accuracy and learning rate per epoch")]


def _evaluation(split: str, evaluation: Evaluation) -> list:
    name = SPLIT_NAMES.get(split, split)
    rows = [[cls, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])]
            for cls, row in evaluation.per_class.items()]
    rows.append(["macro average", "", "", f"{evaluation.macro_f1:.3f}", str(evaluation.count)])
    return [
        Heading(f"{name}: accuracy {evaluation.accuracy:.1%} on {evaluation.count} images"),
        Side([Picture(f"confusion-{split}", figure_png("confusion", {"split": split, "evaluation": evaluation.to_dict()},
                                                       lambda: (confusion_figure(evaluation, split=split), {}))[0],
                      f"{name} confusion matrix"),
              Table(["class", "precision", "recall", "F1", "images"], rows)]),
    ]


def _multilabel_evaluation(split: str, evaluation: MultiLabelEvaluation, scores: LabelScores | None) -> list:
    """Several labels per image: the per-class table at the thresholds, and each class's
    precision-recall curve where the run's answers were given (`scores`)."""
    name = SPLIT_NAMES.get(split, split)
    headers, rows = evaluation.table()
    blocks: list = [Heading(f"{name}: mAP {evaluation.map_macro:.3f} (macro) on {evaluation.count} images"
                            if evaluation.map_macro is not None else f"{name}: {evaluation.count} images"),
                    Text(evaluation.summary())]
    table = Table(headers, rows)
    if scores is None or split not in scores.probabilities:
        return blocks + [table]
    targets, probabilities = scores.targets[split], scores.probabilities[split]
    thresholds = [row["threshold"] for row in evaluation.per_class.values()]
    parts = {"split": split, "classes": evaluation.classes, "thresholds": thresholds,
             "answers": _digest(targets, probabilities)}
    png, _ = figure_png("precision-recall", parts, lambda: (precision_recall_figure(
        targets, probabilities, classes=evaluation.classes, thresholds=thresholds, split=split), {}))
    return blocks + [Side([Picture(f"precision-recall-{split}", png, f"{name} precision-recall curves"), table])]


def _cooccurrence(classes: list[str], scores: LabelScores | None) -> list:
    blocks: list = [Heading("Labels given together (training images)")]
    if scores is None or "train" not in scores.targets:
        return blocks + [Text("Not drawn for this report.")]
    targets = scores.targets["train"]
    png, _ = figure_png("cooccurrence", {"classes": classes, "targets": _digest(targets)},
                        lambda: (cooccurrence_figure(targets, classes=classes), {}))
    return blocks + [Picture("cooccurrence", png, "How often each pair of labels is given to one training image")]


def _digest(*arrays: np.ndarray) -> str:
    import hashlib

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _mistakes(mistakes: Sequence[Mistake] | None, metrics: RunMetrics, *, source: str | None,
              several: bool = False) -> list:
    blocks: list = [Heading("Most confident mistakes (validation)")]
    if mistakes is None:
        return blocks + [Text("Not computed for this report.")]
    if not mistakes:
        return blocks + [Text(f"No mistakes on the {metrics.val.count} validation images.")]
    answers = "The wrong answer" if len(mistakes) == 1 else f"The {len(mistakes)} wrong answers"
    png, drawn = figure_png("mistakes", mistakes_key(mistakes), lambda: (mistakes_figure([m.pair for m in mistakes]),
                                                                         {"method": mistakes[0].method}))
    blocks.append(Text(
        f"The worst wrong decisions: a class given that the image does not have (most probable first), and a "
        f"label of the image not given (least probable first). Beside each image, the activation map "
        f"({drawn['method']}) of the class concerned: where the model saw it, or looked for it. A confident "
        "mistake is often a missing or wrong label: check these files first." if several else
        f"{answers} given with the highest probability. Beside each image, the activation "
        f"map ({drawn['method']}) of the class the model chose: where it saw that class. A confident mistake "
        "is often a mislabelled or ambiguous image: check these files first."
    ))
    blocks.append(Picture("mistakes", png, "Most confident mistakes"))
    rows = [[f"`{_relative(m.path, source)}`", m.true, m.predicted, f"{m.probability:.1%}"] for m in mistakes]
    return blocks + [Table(["file", "labels" if several else "true class", "predicted", "probability"], rows)]


# Training images ranked per stage for the report's channel figures: a sample keeps the report to a
# few seconds on a CPU (one pass to each stage, cached); `graft explain RUN --channels` ranks them all.
REPORT_CHANNEL_IMAGES = 60


def _channels(run_dir: Path) -> list:
    """The last two stages' strongest channels and the training images that activate them most."""
    blocks: list = [Heading("What the last two stages respond to")]
    loaded: dict = {}

    def draw(position: int):
        """The figure of the stage at `position` among the last two, and what the text needs."""
        from ..explain.channels import channels_figure, run_top_channels

        if not loaded:
            from ..classifier import load
            from ..explain.feature_maps import backbone_stages

            loaded["classifier"] = load(run_dir)
            loaded["stages"] = backbone_stages(loaded["classifier"].model.backbone)[-2:]
        classifier, stages = loaded["classifier"], loaded["stages"]
        result = run_top_channels(classifier, stage=stages[position].index, images=REPORT_CHANNEL_IMAGES,
                                  progress=False, channels=4, per_channel=5)
        return (channels_figure(result, backbone=classifier.model.backbone.name),
                {"stage": result.stage.index, "images": result.images, "stages": len(stages)})

    try:
        parts = _channels_key(run_dir)
        last = figure_png("channels", parts and {**parts, "position": -1}, lambda: draw(-1))
        shown = [last] if last[1]["stages"] < 2 else [
            figure_png("channels", parts and {**parts, "position": -2}, lambda: draw(-2)), last]
    except Exception as error:  # noqa: BLE001 - the model is saved: a figure it cannot draw must not lose the report
        return blocks + [Text(f"Not shown: {error}")]
    blocks.append(Text(
        f"For each of the last two stages, its strongest channels (rows) and the training images that activate them "
        f"most, out of {shown[0][1]['images']} sampled: late stages respond to object parts, earlier ones to textures and "
        f"colours. `graft explain {run_dir} --channels --stage K` ranks every training image for stage K."))
    return blocks + [Picture(f"channels-stage-{drawn['stage']}", png,
                             f"Top training images of stage {drawn['stage']}'s strongest channels") for png, drawn in shown]


def _channels_key(run_dir: Path) -> dict | None:
    """What the channel figures are drawn from (graft.report.cache): the run's backbone, weights,
    input and settings, and the identity of its training images' files; None where that cannot be
    read (the figures are then drawn, or say why they cannot be)."""
    from ..data.discover import find_data
    from ..export.cached import weights_digest
    from ..fingerprint import files_fingerprint
    from ..model_files import META_FILE, WEIGHTS_FILE

    try:
        record = json.loads((run_dir / META_FILE).read_text(encoding="utf-8"))
        config = record["config"]
        splits = find_data(record["data"]["source"], val_split=config["data"]["val_split"], seed=config["data"]["seed"],
                           check_images=False, task=record.get("task", "single"))
        return {"run": {key: record.get(key) for key in ("backbone", "weights", "cut", "data_config", "classes",
                                                         "strategy", "inference_precision")},
                "config": {"data": config["data"], "strategy": config["strategy"], "runtime": config["runtime"]},
                "weights": weights_digest(run_dir / WEIGHTS_FILE),
                "train": files_fingerprint([s.path for s in splits.train],
                                           [s.label if s.label >= 0 else s.labels for s in splits.train]),
                "images": REPORT_CHANNEL_IMAGES, "channels": 4, "per_channel": 5}
    except Exception:  # noqa: BLE001 - anything unreadable: drawn, never kept
        return None


def _relative(path: str, source: str | None) -> str:
    """Inside the data folder, the path from it: shorter, and what the user sees in their folders."""
    try:
        return str(Path(path).relative_to(source)) if source else path
    except ValueError:
        return path


def _audit(audit, plan: Strategy) -> list:
    if audit is not None:
        return [Fragment(audit.to_html(), audit.to_markdown())]
    reason = (f"{plan.name} starts from random weights, so there are no pretrained features to audit the data with"
              if not plan.pretrained else "the audit was turned off (--no-audit)")
    return [Heading("Data audit"), Text(f"Not run: {reason}. Run `graft audit DATA` to audit the data on its own.")]


def _advice(advice: dict, *, ran: str) -> list:
    """Why auto trained what it trained (`ran`, the strategy of the model saved): auto's decisions and
    reasons first (the record's advice["auto"]), then graft.advise's measurements (Advice.to_dict())
    and the course's recipe for the case, named as such: one answer, the one the run followed."""
    blocks: list = [Heading("Why this strategy (--strategy auto)")]
    auto = advice.get("auto") or {}
    planned = auto.get("strategy")
    kept = "" if not planned or planned == ran else f" (its plan was {planned}; the probe was kept)"
    blocks.append(Text(f"auto trained `{ran}`{kept}:"))
    blocks.append(Bullets([*(auto.get("reasons") or []), *([auto["fine_tuning"]] if auto.get("fine_tuning") else [])]))
    if {"case", "size", "similarity"} <= advice.keys():
        relation = "to" if advice["similarity"] == "similar" else "from"
        blocks.append(Text(f"What graft advise measured. Case {advice['case']}: {advice['size']} data "
                           f"({advice.get('images_per_class', 0):g} training images per class), {advice['similarity']} "
                           f"{relation} ImageNet:"))
    recipe = list(advice.get("recipe") or [])
    evidence = list(advice.get("reasons") or [])
    if not recipe and evidence:  # records from before the recipe was kept apart: its sentence was the last reason
        evidence, recipe = evidence[:-1], evidence[-1:]
    blocks.append(Bullets(evidence))
    stages = advice.get("stages") or []
    if stages:
        rows = [[str(stage.get("index", "")), str(stage.get("channels", "")), _format(stage.get("bn_drift"), ".3g"),
                 _format(stage.get("probe_accuracy"), ".1%")] for stage in stages]
        blocks.append(Table(["stage", "channels", "BatchNorm drift", "linear-probe accuracy"], rows))
    course = str(advice.get("strategy", "")) + (f" --cut {advice['cut']}" if advice.get("cut") is not None else "")
    if course and "case" in advice:
        differs = "" if course.split(" ")[0] == ran else f"; auto trained `{ran}` instead, for the reasons above"
        blocks += [Text(f"The course's recipe for case {advice['case']} is `{course}`{differs}."), Bullets(recipe)]
    if advice.get("alternatives"):
        blocks += [Text("Alternatives:"), Bullets(list(advice["alternatives"]))]
    shown = {"case", "size", "similarity", "images_per_class", "reasons", "stages", "alternatives", "recipe", "auto",
             "strategy", "cut", "unfreeze"}  # the course's strategy and its settings: named above as the recipe
    rows = [[key.replace("_", " "), _plain(value)] for key, value in advice.items()
            if key not in shown and value not in (None, "", [], {})]
    return blocks + ([Table(["setting", "value"], rows, first_column_header=True)] if rows else [])


def _format(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _plain(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


# Rendering -----------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5em 2em 3em; background: white; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .8em 0; font-size: .95em; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; }
.side { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: .9em; word-break: break-all; }
"""


def _flat(blocks: list) -> list:
    return [inner for block in blocks for inner in (_flat(block.blocks) if isinstance(block, Side) else [block])]


def render_html(report: Report) -> str:
    body = "\n".join(part for part in (_html_block(block) for block in report.blocks) if part)
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(report.title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{html.escape(report.title)}</h1>\n{body}\n</main>\n</body>\n</html>\n")


def _html_block(block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{_inline_html(block.text)}</p>" if block.text else ""
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline_html(item)}</li>" for item in block.items) + "</ul>" if block.items else ""
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Picture):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">'
    if isinstance(block, Side):
        return '<div class="side">' + "".join(f"<div>{_html_block(inner)}</div>" for inner in block.blocks) + "</div>"
    return block.html  # Fragment


def render_markdown(report: Report) -> str:
    parts = [f"# {report.title}"] + [_markdown_block(block) for block in _flat(report.blocks)]
    return "\n\n".join(part for part in parts if part) + "\n"


def _markdown_block(block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return _markdown_table(block)
    if isinstance(block, Picture):
        return f"![{block.alt}]({FIGURES_FOLDER}/{block.name}.png)"
    return block.markdown.strip()  # Fragment


def _inline_html(text: str) -> str:
    """`code` and **bold**, the two Markdown marks the report's text uses."""
    marked = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", marked)


def _html_table(table: Table) -> str:
    head = "" if not any(table.columns) else "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>"
    rows = []
    for row in table.rows:
        cells = []
        for index, cell in enumerate(row):
            if index == 0 and table.first_column_header:
                cells.append(f"<th>{_inline_html(cell)}</th>")
            else:
                number = ' class="number"' if not table.first_column_header and re.fullmatch(r"[\d.,%]+", cell) else ""
                cells.append(f"<td{number}>{_inline_html(cell)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _markdown_table(table: Table) -> str:
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.rows:
        values = [f"**{cell(v)}**" if i == 0 and table.first_column_header and v else cell(v) for i, v in enumerate(row)]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)
