"""The linear probe's fit (graft.heads.logistic) on many images: C is chosen by cross-validation on a
stratified sample of CV_ROWS rows, and the final fit at that C uses every row (issue 24, section 5.3)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from graft.heads import logistic


def blobs(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping classes in 12 dimensions, 3:2:1 in size (so stratification shows)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=rows, p=[0.5, 1 / 3, 1 / 6])
    x = rng.normal(size=(rows, 12)) + 1.2 * np.eye(3, 12)[y]
    return x.astype(np.float32), y


def test_above_cv_rows_c_is_chosen_on_a_stratified_sample_and_fitted_on_all(monkeypatch):
    x, y = blobs(600)
    monkeypatch.setattr(logistic, "CV_ROWS", 240)
    weight, bias, chosen, accuracy = logistic._fit(x.copy(), y, None, seed=0)
    rows = logistic._cv_rows(y, 0)
    assert len(rows) == 240 and np.all(np.diff(rows) > 0)
    assert np.allclose(np.bincount(y[rows]) / 240, np.bincount(y) / 600, atol=0.01)  # each class's share kept
    z = StandardScaler().fit_transform(x.astype(np.float64))
    search = LogisticRegressionCV(Cs=list(logistic.LOGREG_GRID), cv=5, max_iter=2000, random_state=0).fit(z[rows], y[rows])
    assert chosen == float(search.C_[0])
    assert accuracy == pytest.approx(float(np.mean(next(iter(search.scores_.values())), axis=0).max()))
    full = LogisticRegression(C=chosen, max_iter=2000, random_state=0).fit(z, y)  # every row, not the sample
    logits = x.astype(np.float64) @ weight.T + bias  # graft's fit of all rows is in float32 here
    assert np.allclose(logits, full.decision_function(z), rtol=1e-3, atol=1e-3)
    assert (logits.argmax(axis=1) == full.predict(z)).all()
    sample_only = LogisticRegression(C=chosen, max_iter=2000, random_state=0).fit(z[rows], y[rows])
    assert not np.allclose(logits, sample_only.decision_function(z), rtol=1e-3, atol=1e-3)


def test_up_to_cv_rows_every_row_is_cross_validated(monkeypatch):
    x, y = blobs(300)
    assert logistic._cv_rows(y, 0) is None
    monkeypatch.setattr(logistic, "CV_ROWS", 300)
    assert logistic._cv_rows(y, 0) is None
    *_, chosen, accuracy = logistic._fit(x.copy(), y, None, seed=0)
    z = StandardScaler().fit_transform(x.astype(np.float64))
    search = LogisticRegressionCV(Cs=list(logistic.LOGREG_GRID), cv=5, max_iter=2000, random_state=0).fit(z, y)
    assert chosen == float(search.C_[0])


def test_the_sampled_fit_reads_a_memory_map_a_block_at_a_time_to_the_same_fit(monkeypatch, tmp_path):
    # On 100,000 images the run peaked in this fit (issue 24, 5.3): the sample is cross-validated before
    # every row is copied, and the copy is made a block of rows at a time, each block's pages let go.
    from graft import memory

    x, y = blobs(600, seed=3)
    np.save(tmp_path / "rows.npy", x.astype(np.float16))
    monkeypatch.setattr(logistic, "CV_ROWS", 240)
    monkeypatch.setattr(memory, "COPY_BLOCK_ROWS", 7)  # blocks that do not divide the rows
    released = []
    real = memory.release_pages
    monkeypatch.setattr(memory, "release_pages", lambda array: released.append(1) or real(array))
    mapped = logistic.fit_rows(np.load(tmp_path / "rows.npy", mmap_mode="r"), y, C=None, seed=0)
    whole = logistic._fit(x.astype(np.float16).astype(np.float32), y, None, seed=0)
    for ours, theirs in zip(mapped, whole):
        assert np.array_equal(ours, theirs)
    assert len(released) >= 600 // 7  # every block's pages let go as it was copied
    assert np.array_equal(memory.float32_rows(np.load(tmp_path / "rows.npy", mmap_mode="r")), x.astype(np.float16).astype(np.float32))
