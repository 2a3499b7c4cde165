"""graft.io: a write the system refuses names the user's file (never graft's temporary name) and says
what to do; an output the user names is never written over without --overwrite (issue 24)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graft.io import atomic_path, refuse_overwrite, write_text_atomic
from test_cli import run_main

# A child process with a file-size limit, as `ulimit -f` sets one: a write past it fails with EFBIG
# (SIGXFSZ ignored, as Python itself ignores it), so the error reaches graft.
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
sys.argv = {argv!r}
{body}
"""


def _limited(body: str, *, limit: int, argv: list[str] = ("graft",)) -> subprocess.CompletedProcess:
    code = LIMITED.format(limit=limit, argv=[str(a) for a in argv], body=body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_a_file_size_limit_when_the_model_is_saved_names_the_file(linear_probe_run, tmp_path):
    """It was `SafetensorError ... File too large (os error 27)`, from save_model, with no file named."""
    folder = tmp_path / "saved"
    result = _limited(f"""
import errno
import graft
from graft.model_files import save_model
loaded = graft.load({str(linear_probe_run.run_dir)!r}, engine="torch")
try:
    save_model(loaded.model, loaded.record, {str(folder)!r})
except OSError as error:
    print("OSError", error.errno == errno.EFBIG, error.filename)
""", limit=1 << 20)  # 1 MB: the weights take 13 MB
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["OSError", "True", str(folder / "model.safetensors")], result.stdout
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]  # the partial file is gone


def test_a_file_size_limit_in_the_cli_is_one_message_naming_the_file_and_the_limit(linear_probe_run, tmp_path):
    """`graft export RUN --out model.onnx` under `ulimit -f`: one message, the user's path, a hint, exit 2."""
    target = tmp_path / "model.onnx"
    result = _limited("from graft.cli.main import main\nmain()", limit=1 << 20,
                      argv=["graft", "export", linear_probe_run.run_dir, "--out", target])
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"{target}: File too large" in output and "ulimit -f" in output, output
    assert "Traceback" not in output and ".tmp" not in output
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_a_refused_write_names_the_target_never_the_temporary_file(tmp_path):
    """`.p.5e20829d.tmp.csv: Permission denied` was seen: the user never asked for that file."""
    target = tmp_path / "p.csv"
    with pytest.raises(PermissionError) as caught, atomic_path(target) as temporary:
        raise PermissionError(errno.EACCES, "Permission denied", str(temporary))
    assert caught.value.filename == str(target) and caught.value.errno == errno.EACCES
    with pytest.raises(OSError) as caught, atomic_path(target) as temporary:
        temporary.write_text("partial")
        raise OSError(errno.EFBIG, "File too large")  # a write's error carries no file name
    assert caught.value.filename == str(target) and caught.value.errno == errno.EFBIG
    assert not list(tmp_path.iterdir())


def test_a_library_error_carrying_an_os_error_becomes_an_os_error_naming_the_file(tmp_path):
    from safetensors import SafetensorError

    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as caught, atomic_path(target):
        raise SafetensorError("Error while serializing: I/O error: File too large (os error 27)")
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(target))
    with pytest.raises(ValueError), atomic_path(target):  # anything else is left as it is
        raise ValueError("not about the file")
    error = OSError(errno.ENOENT, "No such file or directory", str(tmp_path / "other"))
    with pytest.raises(OSError) as caught, atomic_path(target):
        raise error
    assert caught.value is error  # about another file: its own name stays


def test_the_efbig_message_says_what_to_do():
    from graft.cli.render import describe_os_error

    message = describe_os_error(OSError(errno.EFBIG, os.strerror(errno.EFBIG), "/data/model.onnx"))
    assert message.startswith("/data/model.onnx: File too large.") and "ulimit -f" in message


# Nothing of the user's overwritten ---------------------------------------------------------------------


def test_refuse_overwrite_names_the_file_and_the_flag(tmp_path):
    mine = tmp_path / "mine.csv"
    refuse_overwrite([mine], flag="--csv")  # nothing there: fine
    mine.write_text("precious\n")
    with pytest.raises(Exception, match=rf"--csv: {mine} exists already.*--overwrite"):
        refuse_overwrite([mine], flag="--csv")
    refuse_overwrite([mine], flag="--csv", overwrite=True)
    with pytest.raises(Exception, match="that is a folder"):
        refuse_overwrite([tmp_path], flag="--csv", overwrite=True)


@pytest.fixture
def precious(tmp_path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    return folder


def _unchanged(path: Path) -> bool:
    return path.read_text() == f"the user's own {path.name}\n"


def _plant(path: Path) -> Path:
    path.write_text(f"the user's own {path.name}\n")
    return path


def test_predict_csv_never_writes_over_a_users_file(linear_probe_run, tiny_dataset, precious, capsys, monkeypatch):
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    mine = _plant(precious / "mine.csv")
    code, output = run_main(["predict", linear_probe_run.run_dir, image, "--csv", mine], capsys, monkeypatch)
    assert code == 2 and f"--csv: {mine} exists already" in output and "--overwrite" in output, output
    assert _unchanged(mine)
    code, output = run_main(["predict", linear_probe_run.run_dir, image, "--csv", mine, "--overwrite"], capsys,
                            monkeypatch)
    assert code in (0, None), output
    assert mine.read_text().startswith("path,label,probability")


def test_evaluate_output_never_writes_over_a_users_file(linear_probe_run, tiny_dataset, precious, capsys, monkeypatch):
    """evaluate's help says an earlier evaluation is never overwritten; -o precious.json was, silently."""
    mine = _plant(precious / "precious.json")
    code, output = run_main(["evaluate", linear_probe_run.run_dir, tiny_dataset, "-o", mine], capsys, monkeypatch)
    assert code == 2 and f"--output: {mine} exists already" in output, output
    assert _unchanged(mine)
    beside = _plant(precious / "fresh-predictions.csv")  # the per-image CSV evaluate writes beside the JSON
    code, output = run_main(["evaluate", linear_probe_run.run_dir, tiny_dataset, "-o", precious / "fresh.json"], capsys,
                            monkeypatch)
    assert code == 2 and str(beside) in output and _unchanged(beside) and not (precious / "fresh.json").exists()
    code, output = run_main(["evaluate", linear_probe_run.run_dir, tiny_dataset, "-o", mine, "--overwrite"], capsys,
                            monkeypatch)
    assert code in (0, None), output
    assert json.loads(mine.read_text())["count"] == 12


def test_export_out_never_writes_over_a_users_file(linear_probe_run, precious, capsys, monkeypatch):
    mine = _plant(precious / "precious.onnx")
    code, output = run_main(["export", linear_probe_run.run_dir, "--out", mine], capsys, monkeypatch)
    assert code == 2 and f"--out: {mine} exists already" in output and "--overwrite" in output, output
    assert _unchanged(mine)
    json_beside = _plant(precious / "other.onnx.json")  # the metadata graft writes beside the model
    code, output = run_main(["export", linear_probe_run.run_dir, "--out", precious / "other.onnx"], capsys, monkeypatch)
    assert code == 2 and str(json_beside) in output and _unchanged(json_beside)
    assert not (precious / "other.onnx").exists()


def test_audit_output_never_writes_over_a_users_file(tiny_dataset, precious, capsys, monkeypatch):
    mine = _plant(precious / "findings.json")
    code, output = run_main(["audit", tiny_dataset, "-o", mine, "--img-size", "32", "--workers", "0"], capsys,
                            monkeypatch)
    assert code == 2 and f"--output: {mine} exists already" in output and _unchanged(mine)
    assert "Data audit" not in output  # refused before any work


def test_explain_out_never_writes_over_a_users_file(linear_probe_run, tiny_dataset, precious, capsys, monkeypatch):
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    mine = _plant(precious / f"{image.stem}-red.png")
    code, output = run_main(["explain", linear_probe_run.run_dir, image, "--class", "red", "--out", precious], capsys,
                            monkeypatch)
    assert code == 2 and f"--out: {mine} exists already" in output and _unchanged(mine), output
    maps = _plant(precious / f"{image.stem}-feature-maps.png")
    code, output = run_main(["explain", linear_probe_run.run_dir, image, "--feature-maps", "--out", precious], capsys,
                            monkeypatch)
    assert code == 2 and str(maps) in output and _unchanged(maps), output
    code, output = run_main(["explain", linear_probe_run.run_dir, image, "--class", "red", "--out", precious,
                             "--overwrite"], capsys, monkeypatch)
    assert code in (0, None), output
    assert mine.read_bytes().startswith(b"\x89PNG")


def test_commands_write_again_into_their_own_default_files(linear_probe_run, tiny_dataset, tmp_path, capsys,
                                                           monkeypatch):
    """Without a name given, graft's own outputs in the run folder: explain's PNGs are replaced, and
    evaluate never replaces an earlier evaluation (evaluation-2.json)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(linear_probe_run.run_dir, run)
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    for _ in range(2):
        code, output = run_main(["explain", run, image, "--class", "red"], capsys, monkeypatch)
        assert code in (0, None), output
    assert [p.name for p in (run / "explain").iterdir()] == [f"{image.stem}-red.png"]
    for _ in range(2):
        code, output = run_main(["evaluate", run, tiny_dataset], capsys, monkeypatch)
        assert code in (0, None), output
    assert (run / "evaluation.json").exists() and (run / "evaluation-2.json").exists()


def test_the_write_helpers_replace_graft_s_own_files(tmp_path):
    """The library's writes replace a file atomically: the CLI's --overwrite check is where the user's are kept."""
    target = write_text_atomic(tmp_path / "a.txt", "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
