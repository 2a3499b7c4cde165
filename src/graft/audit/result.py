"""What a data audit found, and how it reads: JSON for scripts, Markdown and HTML for reports.

Every rendering starts from the same three verdict lines (`AuditResult.verdicts`), so the terminal,
the Markdown report and the HTML report never disagree about what was found.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import GraftError

SHOWN_ROWS = 20  # rows per table in reports; the JSON always has them all
# Under this accuracy the label check's classifier has not learnt the classes (little data): a third
# of its calls or more are wrong, so what it flags is mostly its own error (a judgement, not a
# calibration: docs/audit.md calibrates the confidence threshold on data it learns).
WEAK_LABEL_CHECK = 0.67
THUMBNAIL_PX = 64


@dataclass
class DuplicatePair:
    """Two images that look the same: `path_b` (split `split_b`) repeats `path_a`.

    `similarity` is the cosine similarity of their features (1.0 for identical files).
    """

    path_a: Path
    split_a: str
    path_b: Path
    split_b: str
    similarity: float


@dataclass
class NearDuplicateGroup:
    """Near-identical images inside one split (video frames, bursts): `kept`, the first in file order,
    and the `redundant` images, each with its cosine similarity to `kept` (`similarities`, in the same
    order). Dropping the redundant ones leaves one image of the group."""

    split: str
    kept: Path
    redundant: list[Path]
    similarities: list[float]


@dataclass
class Suspect:
    """An image whose folder says `label` but which a classifier that never saw it calls `predicted`.

    `confidence` is that classifier's probability for `predicted`.
    """

    path: Path
    split: str
    label: str
    predicted: str
    confidence: float


@dataclass
class Imbalance:
    """Train images per class, largest/smallest ratio, and the under-represented classes."""

    counts: dict[str, int]
    ratio: float
    flagged: list[str]
    message: str


@dataclass
class AuditResult:
    """The findings of a data audit.

    `label_check_skipped` says why the mislabelling check did not run (None when it ran);
    `settings` records the thresholds, backbone and image counts behind the findings.
    """

    duplicates: list[DuplicatePair]
    imbalance: Imbalance
    mislabelled: list[Suspect]
    notes: list[str] = field(default_factory=list)
    label_check_skipped: str | None = None
    settings: dict = field(default_factory=dict)
    near_duplicates: list[NearDuplicateGroup] = field(default_factory=list)

    @property
    def findings(self) -> int:
        """Problems found: duplicate pairs + under-represented classes + likely mislabelled images. Groups of
        near-identical images within a split are not counted: they cost training time, not correctness
        (`summary` names them beside the findings)."""
        return len(self.duplicates) + len(self.imbalance.flagged) + len(self.mislabelled)

    def redundant(self) -> list[Path]:
        """The images that could be dropped: every group's images but the one it keeps, in group order."""
        return [path for group in self.near_duplicates for path in group.redundant]

    def verdicts(self) -> dict[str, str]:
        """One sentence per check, keyed "duplicates", "near_duplicates", "imbalance", "mislabelled"."""
        return {
            "duplicates": self._duplicates_verdict(),
            "near_duplicates": self._near_duplicates_verdict(),
            "imbalance": self.imbalance.message,
            "mislabelled": self._mislabelled_verdict(),
        }

    def to_dict(self) -> dict:
        """Everything, JSON-able (paths as strings)."""
        return {
            "findings": self.findings,
            "verdicts": self.verdicts(),
            "duplicates": [_jsonable(asdict(pair)) for pair in self.duplicates],
            "near_duplicates": [_jsonable(asdict(group)) for group in self.near_duplicates],
            "imbalance": asdict(self.imbalance),
            "mislabelled": [_jsonable(asdict(suspect)) for suspect in self.mislabelled],
            "label_check_skipped": self.label_check_skipped,
            "notes": list(self.notes),
            "settings": _jsonable(self.settings),
        }

    def to_markdown(self) -> str:
        """A `## Data audit` section: the verdicts, then one table per check (at most 20 rows each)."""
        verdicts = self.verdicts()
        lines = ["## Data audit", ""]
        lines += [f"- **{TITLES[key]}**: {text}" for key, text in verdicts.items()]
        lines += [f"- Note: {note}" for note in self.notes]
        for key, (header, rows) in self.tables().items():
            if not rows:
                continue
            lines += ["", f"### {TITLES[key]}", "", "| " + " | ".join(header) + " |",
                      "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in rows[:SHOWN_ROWS]]
            if len(rows) > SHOWN_ROWS:
                lines += ["", f"... and {len(rows) - SHOWN_ROWS} more (all of them are in the JSON)."]
        return "\n".join(lines) + "\n"

    def to_html(self, *, thumbnails: bool = True) -> str:
        """The Markdown section as an HTML fragment; with `thumbnails`, 64 px previews of shown images."""
        verdicts = self.verdicts()
        parts = ['<section class="graft-audit">', "<h2>Data audit</h2>", "<ul>"]
        parts += [f"<li><strong>{TITLES[key]}</strong>: {html.escape(text)}</li>" for key, text in verdicts.items()]
        parts += [f"<li>Note: {html.escape(note)}</li>" for note in self.notes]
        parts.append("</ul>")
        for key, (header, rows) in self.tables().items():
            if not rows:
                continue
            parts += [f"<h3>{TITLES[key]}</h3>", "<table>",
                      "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
            for row in rows[:SHOWN_ROWS]:
                parts.append("<tr>" + "".join(f"<td>{_html_cell(cell, thumbnails)}</td>" for cell in row) + "</tr>")
            parts += ["</tbody>", "</table>"]
            if len(rows) > SHOWN_ROWS:
                parts.append(f"<p>... and {len(rows) - SHOWN_ROWS} more (all of them are in the JSON).</p>")
        parts.append("</section>")
        return "\n".join(parts) + "\n"

    # -- shared by every rendering ---------------------------------------------------------------

    def tables(self) -> dict[str, tuple[list[str], list[list]]]:
        """Header and rows of each check's table, keyed like `verdicts` (empty rows: nothing to show).

        Cells print as text; image cells (`ImageCell`) also carry the path, for thumbnails.
        """
        duplicates = [[f"{pair.similarity:.3f}", self._image(pair.path_b), pair.split_b,
                       self._image(pair.path_a), pair.split_a] for pair in self.duplicates]
        flagged = set(self.imbalance.flagged)
        by_count = sorted(self.imbalance.counts.items(), key=lambda item: item[1])  # flagged classes first
        balance = [[name, f"{count:,}", "under-represented" if name in flagged else ""]
                   for name, count in by_count] if flagged else []
        suspects = [[self._image(s.path), s.split, s.label, s.predicted, f"{s.confidence:.1%}"]
                    for s in self.mislabelled]
        groups = [[group.split, self._image(group.kept), f"{len(group.redundant):,}", self._image(group.redundant[0]),
                   f"{min(group.similarities):.3f}"] for group in self.near_duplicates]
        return {
            "duplicates": (["similarity", "image", "split", "same as", "split"], duplicates),
            "near_duplicates": (["split", "image kept", "near copies", "e.g.", "lowest similarity"], groups),
            "imbalance": (["class", "train images", ""], balance),
            "mislabelled": (["image", "split", "labels say" if self.several_labels else "folder says", "looks like",
                             "confidence"], suspects),
        }

    def _image(self, path: Path) -> ImageCell:
        """The path relative to the data folder when it is inside it: shorter, and still findable."""
        source = self.settings.get("source")
        if source:
            try:
                return ImageCell(path, str(Path(path).relative_to(source)))
            except ValueError:
                pass
        return ImageCell(path, str(path))

    def _duplicates_verdict(self) -> str:
        threshold = self.settings.get("duplicate_threshold")
        similar = f"cosine similarity of features >= {threshold:g}" if threshold else "similar features"
        if not self.duplicates:
            return f"No near-duplicate images across splits ({similar}) and no identical files."
        leaks = [pair for pair in self.duplicates if pair.split_a != pair.split_b]
        within = len(self.duplicates) - len(leaks)
        found = []
        if leaks:
            evaluated = len({(pair.split_b, pair.path_b) for pair in leaks})
            found.append(f"{_count(evaluated, 'val/test image')} also in an earlier split, which makes "
                         "val/test scores optimistic")
        if within:
            found.append(f"{_count(within, 'identical file')} repeated within a split")
        return (f"{_count(len(self.duplicates), 'duplicate pair')} ({similar}, or identical files): {'; '.join(found)}. "
                "Look at each pair and delete one image of it (keep the copy in train).")

    def _near_duplicates_verdict(self) -> str:
        threshold = self.settings.get("near_duplicate_threshold")
        similar = f"cosine similarity of features >= {threshold:g}" if threshold else "similar features"
        if not self.near_duplicates:
            return f"No near-identical images within train or val ({similar})."
        found = []
        for split, words in (("train", "training"), ("val", "val")):
            groups = [group for group in self.near_duplicates if group.split == split]
            if groups:
                found.append(f"{_count(len(groups), 'group')} of near-identical {words} images "
                             f"({_count(sum(len(group.redundant) for group in groups), 'image')} could be dropped)")
        return (f"{'; '.join(found)} ({similar}). Each group keeps its first image; graft audit --redundant FILE "
                "lists the others, which add little but time to training. graft deletes nothing.")

    def _mislabelled_verdict(self) -> str:
        if self.label_check_skipped:
            return f"Not checked: {self.label_check_skipped}"
        confidence = self.settings.get("mislabel_confidence")
        rule = f" with probability >= {confidence:g}" if confidence else ""
        if not self.mislabelled:
            return (f"No likely mislabelled images: a classifier that never saw each image agrees with its "
                    f"folder, or does not say otherwise{rule}.")
        if self.several_labels:
            return (f"{_count(len(self.mislabelled), 'label')} may be wrong or missing: for each image and label, a "
                    f"one-vs-rest classifier that never saw the image says the opposite{rule} (a label given that it "
                    "finds absent, or one not given that it finds there). Look at each image and correct its labels in "
                    "the label file.")
        checked = self.settings.get("images", {})
        total = checked.get("train", 0) + checked.get("val", 0)
        share = f" ({len(self.mislabelled) / total:.1%} of train+val)" if total else ""
        accuracy = self.settings.get("label_check_accuracy")
        if self.weak_label_check:  # too little data to learn the classes: its disagreements are mostly its own errors
            return (f"{_count(len(self.mislabelled), 'image')}{share} that the label check calls another class{rule}; "
                    f"but on this little data its classifier is right about only {accuracy:.0%} of all images, so these "
                    "are more likely images it gets wrong than wrong labels. Glance at them, and move any that truly "
                    "is in the wrong class folder.")
        judge = (f" That classifier is right about {accuracy:.0%} of all images, so some of these may be hard "
                 "images it gets wrong rather than wrong labels." if accuracy is not None and accuracy < 0.95 else "")
        return (f"{_count(len(self.mislabelled), 'image')}{share} may be mislabelled: for each, a classifier that "
                f"never saw it says it is another class{rule}.{judge} Look at each one; move it to the right class "
                "folder, or delete it.")

    @property
    def several_labels(self) -> bool:
        """The data has several labels per image: the label check judged each (image, label) pair."""
        return self.settings.get("task") == "multilabel"

    @property
    def weak_label_check(self) -> bool:
        """The label check's classifier is right about under WEAK_LABEL_CHECK of the images (too little
        data to learn the classes): what it flags is worded as its guesses, not as findings of fact."""
        accuracy = self.settings.get("label_check_accuracy")
        return accuracy is not None and accuracy < WEAK_LABEL_CHECK

    def summary(self) -> str:
        """The last line: how many findings, of which kind, in words; then the groups of near-identical images."""
        redundant = (f" {_count(len(self.near_duplicates), 'group')} of near-identical images within a split "
                     f"({_count(len(self.redundant()), 'image')} could be dropped)." if self.near_duplicates else "")
        if not self.findings:
            return "0 findings." + redundant
        parts = []
        if self.duplicates:
            parts.append(_count(len(self.duplicates), "duplicate pair"))
        if self.imbalance.flagged:
            parts.append(_count(len(self.imbalance.flagged), "class", "classes") + " with fewer images")
        if self.mislabelled:
            parts.append(_count(len(self.mislabelled), "label") + " that may be wrong or missing" if self.several_labels
                         else _count(len(self.mislabelled), "image") + (" the weak label check doubts"
                                                                        if self.weak_label_check else " that may be mislabelled"))
        return f"{_count(self.findings, 'finding')}: {', '.join(parts)}.{redundant}"


TITLES = {"duplicates": "Duplicates", "near_duplicates": "Near-identical images", "imbalance": "Class balance",
          "mislabelled": "Likely mislabelled"}


@dataclass(frozen=True)
class ImageCell:
    """A table cell that names an image: text in Markdown, a thumbnail and the text in HTML."""

    path: Path
    text: str

    def __str__(self) -> str:
        return self.text


def thumbnail_png(path: str | Path, size: int = THUMBNAIL_PX) -> str | None:
    """The image at `path`, at most `size` px a side, as a base64 PNG; None if it cannot be read."""
    from ..data.images import load_image

    try:
        image = load_image(path, draft_size=(size, size))
    except GraftError:  # moved or deleted since the audit: the report still renders
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _html_cell(cell, thumbnails: bool) -> str:
    if not isinstance(cell, ImageCell):
        return html.escape(str(cell))
    text = f"<code>{html.escape(cell.text)}</code>"
    data = thumbnail_png(cell.path) if thumbnails else None
    if data is None:
        return text
    return (f'<img src="data:image/png;base64,{data}" alt="{html.escape(cell.text)}" '
            f'style="max-width:{THUMBNAIL_PX}px;max-height:{THUMBNAIL_PX}px;display:block">{text}')


def _markdown_cell(cell) -> str:
    text = str(cell).replace("|", "\\|")  # a | in a file name would end the cell
    return f"`{text}`" if isinstance(cell, ImageCell) else text


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def _count(number: int, noun: str, plural: str | None = None) -> str:
    return f"{number:,} " + (noun if number == 1 else plural or noun + "s")
