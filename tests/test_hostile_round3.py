"""The third hostile round (issue 24's acceptance, after multi-label data, suggest, similar, cache prune
and the unknown score landed): each case a user hit from the command line, reproduced here.
docs/reliability.md, "The third hostile round", lists them."""

from __future__ import annotations

import pytest

from conftest import FAST
from graft.errors import GraftError
from test_cli import run_main


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_during_suggest_says_nothing_was_written(linear_probe_run, tiny_dataset, tmp_path, capsys,
                                                         monkeypatch):
    """Ctrl-C while suggest ranked 400 images exited 130 with no word (as predict did before defect 30)."""
    monkeypatch.setattr("graft.suggest.suggest_for_run", _interrupt)
    target = tmp_path / "next.csv"
    code, output = run_main(["suggest", linear_probe_run.run_dir, tiny_dataset / "val", "--csv", target], capsys,
                            monkeypatch)
    assert code == 130 and "Traceback" not in output
    assert "interrupted" in output and f"{target} was not written" in output, output
    assert not list(tmp_path.iterdir())


def test_ctrl_c_during_cache_prune_says_what_was_removed(tmp_path, capsys, monkeypatch):
    """Ctrl-C in `graft cache prune` exited 130 with no word; an entry removed is removed whole
    (FeatureCache.remove), so saying so and how to go on is all that is missing."""
    monkeypatch.setattr("graft.features.cache.FeatureCache.superseded", _interrupt)
    code, output = run_main(["cache", "prune", "--cache-dir", tmp_path], capsys, monkeypatch)
    assert code == 130 and "Traceback" not in output
    assert "interrupted" in output and "graft cache prune" in output, output


def test_similar_count_0_is_refused_in_similar_s_words(linear_probe_run, tiny_dataset, capsys, monkeypatch):
    """`graft similar RUN IMAGE --count 0` said "give how many images to suggest" (suggest's message)."""
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    code, output = run_main(["similar", linear_probe_run.run_dir, image, "--count", "0"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in output
    assert "--count 0" in output and "suggest" not in output, output


def test_similar_answers_the_good_images_and_names_the_bad_one(linear_probe_run, tiny_dataset, tmp_path, capsys,
                                                              monkeypatch):
    """One unreadable image among good ones aborted `graft similar` for all of them, where predict and
    explain answer the readable ones and name the bad one, exit 1 (defects 13 and 31)."""
    good = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    code, output = run_main(["similar", linear_probe_run.run_dir, bad, good, "--count", "1"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in output
    assert "notes.png" in output and f"most like {good}" in output, output


def test_threshold_on_single_label_data_is_refused(tiny_dataset, tmp_path):
    """`graft train FOLDERS --threshold 0.5` trained a single-label model and ignored the threshold, silently."""
    import graft

    with pytest.raises(GraftError, match="--threshold 0.5 is the decision threshold of multi-label data"):
        graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path / "runs", name="t", threshold=0.5, **FAST)
    assert not (tmp_path / "runs" / "t").exists()  # refused before a run folder is made


def test_suggest_label_data_that_is_a_users_file_says_data_must_be_a_folder(linear_probe_run, tiny_dataset, tmp_path,
                                                                            capsys, monkeypatch):
    """`graft suggest RUN DIR --label --data mine.csv` (a file of the user's, not a label file) said "mine.csv
    needs a header row with columns path,label", as if graft were to read it as data."""
    mine = tmp_path / "mine.csv"
    mine.write_text("my precious data\n")
    code, output = run_main(["suggest", linear_probe_run.run_dir, tiny_dataset / "val", "--label", "--no-browser",
                             "--port", "0", "--labels", tmp_path / "labels.csv", "--data", mine], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in output
    assert "--data" in output and "folder" in output and "header row" not in output, output
    assert mine.read_text() == "my precious data\n"


def test_redundant_images_are_never_copies_under_another_label(tiny_dataset, tmp_path):
    """An image copied into another class's folder made a group of near-identical training images that
    kept the copy (blue/...) and listed the original (red/...) as redundant: `graft audit --redundant`
    told the user to drop the rightly labelled image and keep the wrongly labelled one. A near copy under
    another label is a label conflict (the duplicates table shows the pair), never redundant."""
    import shutil

    from graft.audit import audit

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    original = data / "train" / "red" / "000.png"
    shutil.copy(original, data / "train" / "blue" / "000-copy.png")  # first in file order: blue < red
    result = audit(data, img_size=32, workers=0, progress=False)
    assert any({pair.path_a, pair.path_b} == {original, data / "train" / "blue" / "000-copy.png"}
               for pair in result.duplicates)
    label = {path: path.parent.name for path in data.rglob("*.png")}
    for group in result.near_duplicates:
        assert all(label[path] == label[group.kept] for path in group.redundant), group
    assert original not in result.redundant()
