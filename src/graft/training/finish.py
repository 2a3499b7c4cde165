"""Steps 4 to 7 of a run: evaluate the model kept, save it, write the report, leave its export."""

from __future__ import annotations

import shutil
import time

import numpy as np

from ..evaluation import evaluate_predictions, sigmoid
from ..io import write_json_atomic
from ..record import DataSummary, ParamCounts, RunMetrics, RunRecord, library_versions
from .run import Run

# A run whose head is not made of graft's own layers (so its export cannot be put together from
# the backbone's graph, graft.export.cached) is traced whole at its end (about 11 s for Lite0 at
# 224 px: under a tenth of such a run) only if it trained at least this long, else when first predicted;
# where its evaluation traced it already (its backbone trained), the export takes that graph whatever the time.
EXPORT_AFTER_SECONDS = 120.0


def evaluate(run: Run) -> None:
    """Val and test accuracy of the model as it will be saved: from the cached features while the
    backbone is the frozen one they came from, else through the whole model as graft predicts it:
    on a CPU, the classifier's ONNX graph, made once for val and test, which the run's export then
    takes as it is (graft.export.cached.unsaved_graph)."""
    run.model.eval()
    splits = run.splits
    frozen = run.val_features
    if frozen is not None:  # the backbone is the one these features came from
        predictor, run.engine = None, frozen.meta.get("engine")
    else:
        predictor = run.predictor()  # one graph for val and test, and the export
        run.engine = predictor.engine
    run.val_logits = run.logits(splits.val, frozen, predictor=predictor)
    if run.multilabel:  # each class's threshold, chosen on val, decides every split (the record keeps them)
        from ..evaluation import choose_thresholds

        run.thresholds = choose_thresholds(run.targets(splits.val), sigmoid(run.val_logits), classes=splits.classes,
                                           threshold=run.config.data.threshold)
    run.evaluations = {"val": _evaluation(run, splits.val, run.val_logits)}
    if splits.test:
        run.test_logits = run.logits(splits.test, run.features(splits.test, "test") if predictor is None else None,
                                     predictor=predictor)
        run.evaluations["test"] = _evaluation(run, splits.test, run.test_logits)
    run.timings["total_s"] = time.perf_counter() - run.started


def save(run: Run) -> None:
    """model.safetensors and graft.json (what the model is and how it was made), written whole."""
    from ..model_files import save_model

    counts, config = run.model.param_counts(), run.config
    run.metrics = RunMetrics(
        evaluations=run.evaluations, history=run.history, timings=run.timings, logreg_c=run.logreg_c,
        params=ParamCounts(total=counts.total, trainable=counts.trainable, frozen=counts.frozen,
                           trained=run.trained_params()))
    # auto's plan and decisions (a multi-label plan has no graft advise measurements beside them)
    advice = {**run.notes.get("advice", {}), "auto": run.trail} if "advice" in run.notes or run.trail else {}
    if "backbone_choice" in run.notes:
        advice["backbone_choice"] = run.notes["backbone_choice"]
    splits, unknown = run.splits, unknown_score(run)
    run.record = RunRecord(
        backbone=config.strategy.backbone, weights=run.net.weights_source, cut=run.net.cut,
        data_config=run.net.data_config, classes=splits.classes, strategy=run.plan.name,
        # as run: auto's choices, the chosen C and the input size filled in, so --config replays it
        config=config.replace(img_size=run.net.data_config.image_size, logreg_c=run.logreg_c or config.strategy.logreg_c),
        advice=advice or None,
        inference_precision=run.runtime.inference_precision, engine=run.engine,  # what scored val and test
        task=run.splits.task, thresholds=run.thresholds.to_dict() if run.thresholds is not None else None,
        unknown=unknown.to_dict() if unknown is not None else None,
        accuracy=run.metrics.accuracies(),
        data=DataSummary(source=str(splits.source), counts={s: len(getattr(splits, s)) for s in ("train", "val", "test")}),
        versions=library_versions(),
    )
    save_model(run.model, run.record, run.run_dir, unknown=unknown)
    shutil.rmtree(run.run_dir / "checkpoints", ignore_errors=True)  # the best epoch is now model.safetensors


def unknown_score(run: Run):
    """The score of unknown images (graft.unknown.fit_unknown: how unlike the training images an image
    is, its threshold set on val to keep --known-recall of the known images), fitted on the model's
    own embeddings of train and val: the cached features while the backbone is the frozen one they
    came from, else computed now through the trained backbone. The same for multi-label runs: the
    knn score does not read the labels. None, with a note, for runs without a pretrained backbone
    and data too small to set the threshold."""
    from ..errors import GraftError
    from ..unknown import fit_unknown, val_images_needed

    if not run.plan.pretrained or run.config.strategy.weights == "none":
        run.say("Note: no score of unknown images: the backbone did not start from pretrained weights.")
        return None
    tick, splits = time.perf_counter(), run.splits
    needed = val_images_needed(run.config.data.known_recall)
    if len(splits.val) < needed:  # said before any embedding is computed
        run.say(f"Note: no score of unknown images was fitted: keeping {run.config.data.known_recall:.0%} of known "
                f"images needs at least {needed} val images, and val holds {len(splits.val)}; add val images "
                "(--val-split) or lower --known-recall.")
        return None
    if run.val_features is not None:  # the frozen backbone's features: the model's embeddings
        train, val = run.features(splits.train, "train").features, run.val_features.features
    else:  # the backbone trained: its cached features are no longer the model's
        train, val = _embeddings(run, splits.train), _embeddings(run, splits.val)
    try:
        # one label per row, as fit_unknown checks (knn reads none of them; a multi-label sample's is -1)
        score = fit_unknown(train, run.labels(splits.train), val, known_recall=run.config.data.known_recall)
    except GraftError as error:
        run.say(f"Note: no score of unknown images was fitted: {error}")
        return None
    run.timings["unknown_s"] = time.perf_counter() - tick
    run.say(f"Unknown images: {score.kind} score, threshold {score.threshold:.4g} keeps {score.val_kept:.1%} of "
            f"{score.val_images} val images as known (--known-recall {score.known_recall:g})")
    return score


def _embeddings(run: Run, samples) -> np.ndarray:
    """The model's backbone's pooled features of `samples` (N x D, float32), in torch: no graph of
    the trained backbone alone is made (the classifier's graph that scored val and test is the one
    the run exports), and making one here would cost a graph per run."""
    import torch
    from torch.utils.data import DataLoader

    from ..data.dataset import ImageDataset
    from ..data.images import eval_draft_size
    from ..data.transforms import eval_transform
    from ..engines import frozen_forward

    config = run.net.data_config
    images = ImageDataset(samples, eval_transform(config, pixels=True), draft_size=eval_draft_size(config.image_size))
    loader = DataLoader(images, batch_size=run.runtime.batch_size * 2, num_workers=run.runtime.workers)
    runtime = run.runtime.but(engine="torch")
    with frozen_forward(run.model.backbone, runtime=runtime, input_size=config.input_size) as forward:
        rows = [forward(pixels).float() for pixels, _ in loader]
    return torch.cat(rows).numpy() if rows else np.zeros((0, run.net.num_features), dtype=np.float32)


def report(run: Run) -> None:
    """report.html and report.md: what was learnt, where it fails (the most confident mistakes, with
    where the model looked), and what the audit found in the data."""
    if not run.config.output.report:
        return
    from ..report import confident_mistakes, write_report
    from ..report.writer import LabelScores

    assert run.record is not None and run.metrics is not None and run.val_logits is not None  # saved and evaluated
    tick = time.perf_counter()
    mistakes, scores = None, None
    if run.multilabel:  # each class's curves, the labels' co-occurrence, the worst wrong decisions
        from ..report.mistakes import confident_label_mistakes

        answered = {"val": run.val_logits, "test": run.test_logits}
        scores = LabelScores(
            targets={split: run.targets(getattr(run.splits, split)) for split in ("train", "val", "test")},
            probabilities={split: sigmoid(logits) for split, logits in answered.items() if logits is not None})
        assert run.thresholds is not None  # chosen on val by evaluate
        mistakes = confident_label_mistakes(run.model, run.splits.val, run.val_logits, targets=scores.targets["val"],
                                            thresholds=run.thresholds.array(), classes=run.splits.classes)
    else:
        mistakes = confident_mistakes(run.model, run.splits.val, run.val_logits, classes=run.splits.classes)
    try:
        html_path, _ = write_report(run.run_dir, record=run.record, metrics=run.metrics, strategy=run.plan,
                                    mistakes=mistakes, audit=run.audit, scores=scores)
        run.say(f"Report: {html_path} (and report.md)")
    except OSError as error:  # the model is saved and complete: a missing report must not hide that
        run.say(f"Warning: the report could not be written ({error.strerror or error}: {error.filename}); "
                f"the model in {run.run_dir} is saved and complete.")
    run.timings["report_s"] = time.perf_counter() - tick


def export(run: Run, classifier) -> None:
    """A run on a CPU leaves its ONNX export in graft's cache (its backbone's graph, or its
    structure's template given the fine-tuned weights, plus the head: about a second once that graph
    is cached), so that `graft predict RUN` needs no torch and no export the first time. Then
    metrics.json, last, with every timing."""
    if run.runtime.device.type == "cpu":
        from ..export.cached import export_after_training

        tick = time.perf_counter()
        if export_after_training(run.run_dir, classifier, graphs=run.cache.engines, say=run.say,
                                 frozen_backbone=run.plan.pretrained and not run.plan.image_phase,
                                 may_trace=tick - run.started >= EXPORT_AFTER_SECONDS) is not None:
            run.timings["export_s"] = time.perf_counter() - tick
    assert run.metrics is not None  # saved
    write_json_atomic(run.run_dir / "metrics.json", run.metrics.to_dict())


def _evaluation(run: Run, samples, logits):
    if run.multilabel:
        from ..evaluation import evaluate_multilabel

        return evaluate_multilabel(run.targets(samples), sigmoid(logits), classes=run.splits.classes,
                                   thresholds=run.thresholds)
    return evaluate_predictions(run.labels(samples).tolist(), logits.argmax(axis=1), run.splits.classes)
