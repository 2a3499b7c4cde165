"""Steps 2 and 3 of a run: the head phase on the frozen backbone's cached features, then the image
phase, where the strategy trains part or all of the backbone on images.

What trains, how, and what happens around the image phase are the strategy's (graft.strategies):
these functions do the mechanics it asks for and call its hooks.
"""

from __future__ import annotations

import time

from ..record import EpochRow
from .run import Run


def head_phase(run: Run) -> None:
    """The backbone frozen, its features once per image and view (the cache first), the data audit on
    the plain-view ones, then the head: a logistic regression or AdamW over the cached views."""
    plan = run.plan
    if plan.head_phase is None:
        return
    run.model.freeze_backbone()
    run.say(run.param_summary("head phase"))
    tick = time.perf_counter()
    views = plan.head_views(run.config.augment)  # [None]: the plain view only
    train_views = [run.features(run.splits.train, "train", view) for view in views]
    run.val_features = run.features(run.splits.val, "val")
    run.timings["features_s"] = time.perf_counter() - tick
    if run.config.output.audit:  # now, while the backbone is pretrained and frozen: its plain-view features
        _audit(run, plain_train=train_views[0] if views == [None] else None)
    if plan.head_phase == "logreg":
        from ..heads.logistic import fit_logistic_head

        tick, chosen = time.perf_counter(), run.config.strategy.logreg_c
        run.logreg_c = fit_logistic_head(run.model.head, train_views[0], C=chosen, seed=run.seed_value,
                                         balanced=run.class_weights is not None,
                                         targets=run.targets(run.splits.train) if run.multilabel else None)
        run.timings["head_s"] = time.perf_counter() - tick
        run.say(f"Logistic regression: C = {run.logreg_c:g}" + (" (5-fold cross-validation on train)" if chosen is None else ""))
    else:
        run.train_head(views)
    run.head_logits = run.logits(run.splits.val, run.val_features)
    run.head_score = run.score(run.head_logits, run.splits.val)


def image_phase(run: Run) -> None:
    """The backbone parameters the strategy names train with the head on images, the backbone at the
    strategy's fraction of the learning rate; the strategy's hooks run before (it may cancel the
    phase) and after (it may keep another model). The model ends holding the best epoch's weights."""
    run.plan.before_images(run)
    if run.trainable is None:  # no image phase, or the strategy cancelled it
        return
    run.model.freeze_backbone(run.trainable)
    run.say(run.param_summary("image phase"))
    tick = time.perf_counter()
    result = run.fit_images()
    run.timings["images_s"] = time.perf_counter() - tick
    run.history += [EpochRow(**row) for row in result.history]
    run.val_features = None  # the backbone changed: its cached features no longer apply
    run.plan.after_images(run, result.best_epoch)


def _audit(run: Run, *, plain_train) -> None:
    """Audit the data from the frozen, pretrained backbone's plain-view features (cached: the test
    features are the ones the evaluation reads later) and write audit.json."""
    from ..audit import audit_features
    from ..io import write_json_atomic

    tick, splits = time.perf_counter(), run.splits
    assert run.val_features is not None  # the head phase has them
    by_split = {"train": plain_train if plain_train is not None else run.features(splits.train, "train"),
                "val": run.val_features}
    if splits.test:
        by_split["test"] = run.features(splits.test, "test")
    run.audit = audit_features(splits, by_split, seed=run.seed_value)
    write_json_atomic(run.run_dir / "audit.json", run.audit.to_dict())
    run.say(f"Data audit: {run.audit.findings} findings (see {run.run_dir / 'audit.json'})")
    run.timings["audit_s"] = time.perf_counter() - tick
