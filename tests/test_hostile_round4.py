"""The fourth hostile round (issue 24's acceptance: docs/reliability.md's matrix run again from the CLI at
the end of the issue): each case a user hit from the command line, reproduced here."""

from __future__ import annotations

from test_cli import run_main


def test_a_csv_under_a_file_is_not_said_to_be_an_out_problem(linear_probe_run, tiny_dataset, tmp_path, capsys,
                                                              monkeypatch):
    """`graft predict RUN IMAGE --csv notes/out.csv` where notes is a file said "choose another --out":
    predict has no --out; the flag the user gave is --csv."""
    notes = tmp_path / "notes"
    notes.write_text("mine\n")
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    code, output = run_main(["predict", linear_probe_run.run_dir, image, "--csv", notes / "out.csv"], capsys,
                            monkeypatch)
    assert code == 2 and "Traceback" not in output
    assert str(notes) in output and "--out" not in output, output
    assert notes.read_text() == "mine\n"


class _CallsTheSystem:
    def __reduce__(self):
        import os

        return (os.system, ("echo unpickled",))


def test_a_hand_made_evil_pth_is_refused_without_torch_s_request_to_file_an_issue(tmp_path):
    """`evil.pth` written by `pickle.dump` (protocol 4) was refused, but torch's UserWarning came first:
    "Detected pickle protocol 4 ... please file an issue for adding support", advice to the user to report
    torch's loader, the kind of advice graft otherwise keeps out of its message (defect 28)."""
    import pickle
    import warnings

    import pytest

    from graft.backbones import create_backbone
    from graft.errors import WeightsError

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"weight": _CallsTheSystem()}, protocol=4))
    with warnings.catch_warnings(record=True) as seen, pytest.raises(WeightsError) as error:
        warnings.simplefilter("always")
        create_backbone("tf_efficientnet_lite0", weights=str(path), img_size=32)
    assert str(path) in str(error.value) and "never unpickles" in str(error.value)
    assert not [w for w in seen if "file an issue" in str(w.message)], [str(w.message) for w in seen]


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_any_command_says_it_was_interrupted_and_exits_130(tmp_path, capsys, monkeypatch):
    """Ctrl-C during `graft evaluate`, `graft export` or `graft audit` (and explain, advise, ...) exited 130
    with no word (Typer's own exit), where train, predict, suggest, similar and cache prune say what they
    interrupted (defects 30 and 37)."""
    monkeypatch.setattr("graft.loader.open_predictor", _interrupt)
    monkeypatch.setattr("graft.classifier.load", _interrupt)
    monkeypatch.setattr("graft.audit.audit", _interrupt)
    for args in (["evaluate", tmp_path, tmp_path], ["export", tmp_path], ["audit", tmp_path]):
        code, output = run_main(args, capsys, monkeypatch)
        assert code == 130 and "Traceback" not in output, (args[0], code, output)
        assert "interrupted" in output and "Aborted" not in output, (args[0], output)
    assert not list(tmp_path.iterdir())


def test_cache_ls_of_an_entry_with_changed_bytes_points_to_verify(tmp_path, capsys, monkeypatch):
    """Bytes changed in place inside features.npy (the size kept): `graft cache ls` listed the entry as "ok"
    and said nothing more, while `graft cache verify` called it damaged (ls checks files, shapes and sizes
    only, to stay quick). ls must say that its "ok" does not cover the checksum, and where that is checked."""
    from graft.features import FeatureCache
    from test_cache import _entry, _flip_a_byte

    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "graft-cache"))
    cache = FeatureCache(tmp_path / "graft-cache" / "features")
    _flip_a_byte(_entry(cache).path)
    code, listing = run_main(["cache", "ls"], capsys, monkeypatch)
    assert code == 0 and "Traceback" not in listing
    assert "damaged" in listing or "graft cache verify" in listing, listing
    code, report = run_main(["cache", "verify"], capsys, monkeypatch)
    assert code == 1 and "checksum" in report
