"""Hostile input and interruptions: each test reproduces a defect the reliability review found.

No traceback reaches a user, no state is left that breaks a later command, and no wrong answer is
given silently. (Data discovery and the feature cache have their own files: test_data*, test_cache.)
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch

import graft
from conftest import FAST, make_image
from graft.errors import GraftError, ModelFileError, WeightsError
from graft.io import RUN_MARKER, new_run_dir
from graft.training.pipeline import RunInterrupted
from test_cli import run_main


def test_a_diverging_loss_stops_with_a_message_and_saves_nothing(tiny_dataset, tmp_path):
    with pytest.raises(GraftError, match=r"Training diverged: the loss became (nan|inf).*lower --lr"):
        graft.train(tiny_dataset, strategy="feature-extract", lr=1e30, out=tmp_path, name="nan",
                    **{**FAST, "head_epochs": 3})
    assert not (tmp_path / "nan" / "model.safetensors").exists()


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--seed", "-1"), ("--devices", "abc"),
                                         ("--num-nodes", "0"), ("--unfreeze", "99")])
def test_a_bad_value_on_the_command_line_stops_before_any_work(tiny_dataset, tmp_path, capsys, monkeypatch, flag, value):
    """Defects 2 and 10 as a user meets them: these trained (a NaN model, exit 0), passed silently, or
    failed late with a traceback. Each is now refused at once, naming the flag, with no run folder."""
    strategy = "partial" if flag == "--unfreeze" else "linear-probe"
    code, output = run_main(["train", tiny_dataset, "--strategy", strategy, "--img-size", "32", "--no-report", "--no-audit",
                             "--out", tmp_path / "runs", "--cache-dir", tmp_path / "cache", flag, value], capsys, monkeypatch)
    assert code == 2 and flag in output and "Traceback" not in output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no run folder at all


def test_out_that_is_a_file_fails_before_any_work(tiny_dataset, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    code, output = run_main(["train", tiny_dataset, "--out", blocker / "runs", "--strategy", "linear-probe"],
                            capsys, monkeypatch)
    assert code == 2 and "is a file, not a folder" in output and "Traceback" not in output
    assert "Data:" not in output  # refused before the data was read


def test_os_errors_are_one_message_naming_the_file(tiny_dataset, tmp_path, capsys, monkeypatch):
    def refuse(out, name):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(out) / name))

    monkeypatch.setattr("graft.training.setup.new_run_dir", refuse)
    code, output = run_main(["train", tiny_dataset, "--out", tmp_path, "--name", "x", "--strategy", "linear-probe",
                             "--img-size", "32", "--workers", "0"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in output
    assert f"{tmp_path / 'x'}: Permission denied. graft may not write there" in output


def test_a_report_that_cannot_be_written_leaves_a_complete_model(tiny_dataset, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / "report.html"))

    monkeypatch.setattr("graft.report.write_report", disk_full)
    messages = []
    run = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name="r",
                      **{**FAST, "report": True, "log": messages.append})
    assert any("report could not be written" in m and "saved and complete" in m for m in messages)
    assert graft.load(run.run_dir).classes == run.record.classes
    assert json.loads((run.run_dir / "metrics.json").read_text())["val_accuracy"] == run.metrics.val_accuracy


def test_a_disk_that_fills_while_the_report_is_written_leaves_no_temporary_file(tiny_dataset, tmp_path, monkeypatch):
    """The write itself fails (after the temporary file got its bytes, before the rename)."""
    import graft.io

    real_fsync = graft.io.fsync_path

    def fsync(path):
        if "report" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_fsync(path)

    monkeypatch.setattr(graft.io, "fsync_path", fsync)
    messages = []
    run = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name="full",
                      **{**FAST, "report": True, "log": messages.append})
    assert any("report could not be written" in m for m in messages)
    assert not [p.name for p in run.run_dir.rglob("*") if ".tmp" in p.name]
    assert not (run.run_dir / "report.html").exists() and graft.load(run.run_dir).classes == run.record.classes


def test_an_edited_record_is_refused(linear_probe_run, tmp_path):
    """Swapping two class names used to mislabel every prediction silently: the checksum covers the record."""
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(linear_probe_run.run_dir, copy)
    record = json.loads((copy / "graft.json").read_text())
    record["classes"][0], record["classes"][1] = record["classes"][1], record["classes"][0]
    (copy / "graft.json").write_text(json.dumps(record))
    with pytest.raises(ModelFileError, match="changed after graft saved it"):
        graft.load(copy)


def test_model_files_get_the_same_permissions(linear_probe_run):
    weights, record = linear_probe_run.run_dir / "model.safetensors", linear_probe_run.run_dir / "graft.json"
    assert weights.stat().st_mode & 0o777 == record.stat().st_mode & 0o777


def test_class_names_and_paths_are_never_markup(tmp_path, capsys, monkeypatch):
    rows = ["path,label"]
    for label, colour in (("[/]", (220, 30, 30)), ("[bold red]x", (30, 30, 220))):
        for index in range(8):
            path = make_image(tmp_path / "img" / f"{abs(hash(label)) % 1000}-{index}.png", color=colour, seed=index)
            rows.append(f"{path},{label}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    code, output = run_main(["train", tmp_path / "labels.csv", "--strategy", "linear-probe", "--img-size", "32",
                             "--workers", "0", "--no-audit", "--out", tmp_path / "runs"], capsys, monkeypatch)
    assert code in (0, None), output
    assert "[/]" in output and "[bold red]x" in output


def test_two_runs_with_one_name_get_two_folders(tmp_path):
    first, second = new_run_dir(tmp_path, "same"), new_run_dir(tmp_path, "same")
    assert first != second and first.name == "same" and second.name == "same-2"
    assert (first / RUN_MARKER).exists() and (second / RUN_MARKER).exists()


def test_bad_unfreeze_fails_before_a_run_folder_is_made(tiny_dataset, tmp_path):
    with pytest.raises(GraftError, match="--unfreeze 99"):
        graft.train(tiny_dataset, strategy="partial", unfreeze=99, out=tmp_path / "runs", **FAST)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_predict_answers_the_good_images_and_names_the_bad_one(linear_probe_run, tiny_dataset, tmp_path, capsys, monkeypatch):
    good = sorted((tiny_dataset / "val" / "red").iterdir())[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, output = run_main(["predict", linear_probe_run.run_dir, good[0], broken, good[1]], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in output
    assert str(good[0]) in output and str(good[1]) in output and "red" in output
    assert f"not read: {broken}" in output


def test_a_pickled_weights_file_is_refused_without_suggesting_unsafe_loading(tmp_path):
    from graft.backbones import create_backbone

    path = tmp_path / "whole-model.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module, not a state dict
    with pytest.raises(WeightsError) as error:
        create_backbone("tf_efficientnet_lite0", weights=str(path), img_size=32)
    message = str(error.value)
    # torch's own message said re-running with `weights_only` set to `False` "will likely succeed"
    assert "never unpickles" in message and "will likely succeed" not in message
    assert not re.search(r"weights_only\W{0,5}(set to\W{0,5})?False", message)


def test_ctrl_c_in_the_image_phase_says_where_the_run_is(tiny_dataset, tmp_path, capsys, monkeypatch):
    """Lightning turned Ctrl-C into a silent exit 1; graft says what it interrupted and exits 130."""
    from graft.training.module import ClassifierModule

    def interrupted(self, batch, batch_idx):
        if batch[0].dim() == 4:  # images: the image phase, after a head phase that finished
            raise KeyboardInterrupt
        return self._step(batch, "train")

    monkeypatch.setattr(ClassifierModule, "training_step", interrupted)
    with pytest.raises(RunInterrupted) as caught:
        graft.train(tiny_dataset, strategy="finetune", out=tmp_path, name="ft", **FAST)
    assert caught.value.stage == "the image phase" and not caught.value.saved
    assert caught.value.run_dir == tmp_path / "ft"
    code, output = run_main(["train", tiny_dataset, "--strategy", "finetune", "--img-size", "32", "--epochs", "1",
                             "--head-epochs", "1", "--views", "1", "--workers", "0", "--no-audit", "--no-report",
                             "--out", tmp_path, "--name", "cli"], capsys, monkeypatch)
    assert code == 130 and "Interrupted during the image phase: no model was saved yet" in output and "graft train --resume" in output
    assert str(tmp_path / "cli") in output and "Traceback" not in output


def test_no_temporary_files_are_left_behind(linear_probe_run):
    leftovers = [p for p in linear_probe_run.run_dir.rglob("*") if ".tmp" in p.name]
    assert not leftovers and os.listdir(linear_probe_run.run_dir)


# Resume ---------------------------------------------------------------------------------------------------

RESUMABLE = dict(strategy="finetune", img_size=32, batch_size=8, head_epochs=2, epochs=3, views=1, workers=0,
                 precision="32", report=False, audit=False, log=None, progress=False)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def _same_run(a, b) -> None:
    """Bitwise the same weights, the same metrics and history but for the clock, and the same epochs in
    the training logs (a resumed run once lost those logged before the interruption, issue 24)."""
    wa, wb = _weights(a.run_dir), _weights(b.run_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics.evaluations == b.metrics.evaluations
    strip = lambda rows: [{**row.__dict__, "epoch_time_s": None} for row in rows]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    for phase in ("head", "images"):
        assert _logged(a.run_dir, phase) == _logged(b.run_dir, phase) != []


def _logged(run_dir: Path, phase: str) -> list[tuple[int, str]]:
    """(epoch, val accuracy) of every epoch in the run's logs/PHASE/metrics.csv."""
    import csv

    with open(run_dir / "logs" / phase / "metrics.csv", newline="") as handle:
        return [(int(row["epoch"]), row["val_acc"]) for row in csv.DictReader(handle) if row.get("val_acc")]


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    return graft.train(tiny_dataset, out=out, name="whole", **RESUMABLE)


@pytest.mark.parametrize("stop_at", [(0, 0), (1, 0), (2, 3)])  # (image epoch, batch) where Ctrl-C lands
def test_an_interrupted_image_phase_resumes_to_the_same_weights(uninterrupted, tiny_dataset, tmp_path, monkeypatch,
                                                                stop_at):
    from graft.training.module import ClassifierModule
    from graft.training.pipeline import resume_run

    step = ClassifierModule.training_step

    def interrupt(self, batch, batch_idx):
        if batch[0].dim() == 4 and (self.current_epoch, batch_idx) == stop_at:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", interrupt)
    with pytest.raises(RunInterrupted) as caught:
        graft.train(tiny_dataset, out=tmp_path, name="cut", **RESUMABLE)
    epochs_run = set()

    def count(self, batch, batch_idx):
        if batch[0].dim() == 4:
            epochs_run.add(self.current_epoch)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", count)
    resumed = resume_run(caught.value.run_dir, log=None, progress=False)
    assert resumed.run_dir == tmp_path / "cut"
    assert epochs_run == set(range(stop_at[0], 3))  # the epochs already done are not run again
    _same_run(uninterrupted, resumed)


@pytest.mark.parametrize("stop_at", [(1, 0), (1, 2)])  # (head epoch, batch) where Ctrl-C lands
def test_an_interrupted_head_phase_resumes_from_its_last_epoch_to_the_same_weights(uninterrupted, tiny_dataset, tmp_path,
                                                                                   monkeypatch, stop_at):
    """The head phase shuffles with its own generator: its state is saved with every epoch too."""
    from graft.training.module import ClassifierModule
    from graft.training.pipeline import resume_run

    step = ClassifierModule.training_step

    def interrupt(self, batch, batch_idx):
        if batch[0].dim() == 2 and (self.current_epoch, batch_idx) == stop_at:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", interrupt)
    with pytest.raises(RunInterrupted) as caught:
        graft.train(tiny_dataset, out=tmp_path, name="cut", **RESUMABLE)
    assert caught.value.stage.startswith("the head phase")
    assert (tmp_path / "cut" / "checkpoints" / "head-resume.pt").exists()
    head_epochs_run = set()

    def count(self, batch, batch_idx):
        if batch[0].dim() == 2:
            head_epochs_run.add(self.current_epoch)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", count)
    resumed = resume_run(caught.value.run_dir, log=None, progress=False)
    assert head_epochs_run == {1}  # head epoch 0 is not run again
    _same_run(uninterrupted, resumed)


def test_resume_refuses_a_finished_run_and_a_folder_that_is_no_run(uninterrupted, tmp_path):
    from graft.training.pipeline import resume_run

    with pytest.raises(GraftError, match="this run finished"):
        resume_run(uninterrupted.run_dir)
    with pytest.raises(GraftError, match="not a run folder graft can resume"):
        resume_run(tmp_path)


@pytest.mark.slow
def test_kill_9_in_the_image_phase_then_resume_gives_the_same_model(uninterrupted, tiny_dataset, tmp_path):
    """A real crash: the process is killed (SIGKILL) once an image epoch is saved, then resumed."""
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ)  # the session's cache: the features and graphs the uninterrupted run made
    args = [sys.executable, "-m", "graft", "train", str(tiny_dataset),
            "--strategy", "finetune", "--img-size", "32", "--batch-size", "8", "--head-epochs", "2", "--epochs", "3",
            "--views", "1", "--workers", "0", "--precision", "32", "--no-report", "--no-audit",
            "--out", str(tmp_path), "--name", "killed"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "images-resume.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "the run ended or stalled before its first image epoch was saved"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    result = subprocess.run([sys.executable, "-m", "graft", "train", "--resume",
                             str(tmp_path / "killed")], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    wa, wb = _weights(uninterrupted.run_dir), _weights(tmp_path / "killed")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_lightning_epoch_counters_are_where_resume_writes_them():
    """graft resumes a fit by telling Lightning how many epochs are done (graft.training.resume_point says
    why its public ckpt_path would not give the same weights): this fails when a Lightning release moves
    or renames those counters."""
    import lightning as L

    from graft.training.module import ClassifierModule
    from graft.training.resume_point import EPOCH_COUNTERS, epochs_completed, start_at_epoch

    seen: list[int] = []

    class StartAtTwo(L.Callback):
        def on_train_start(self, trainer, pl_module):
            progress = trainer.fit_loop.epoch_progress
            assert all(hasattr(counter, stage) for counter in (progress.current, progress.total) for stage in EPOCH_COUNTERS)
            start_at_epoch(trainer, 2)

        def on_train_epoch_start(self, trainer, pl_module):
            seen.append(trainer.current_epoch)

    net = torch.nn.Linear(4, 2)
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.tensor([0, 1] * 4))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = L.Trainer(max_epochs=4, callbacks=[StartAtTwo()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(ClassifierModule(net, [{"params": list(net.parameters()), "lr": 0.1}]), loader, loader)
    assert seen == [2, 3] and epochs_completed(trainer) == 4  # epochs 0 and 1 counted as done, never run


@pytest.fixture
def interrupted_on_a_copy(tiny_dataset, tmp_path, monkeypatch):
    """An interrupted run (Ctrl-C in its second head epoch) on a copy of the tiny data, which the test may change."""
    import shutil

    from graft.training.module import ClassifierModule

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    step = ClassifierModule.training_step

    def interrupt(self, batch, batch_idx):
        if batch[0].dim() == 2 and self.current_epoch == 1:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassifierModule, "training_step", interrupt)
    with pytest.raises(RunInterrupted) as caught:
        graft.train(data, out=tmp_path / "runs", name="cut", **RESUMABLE)
    monkeypatch.setattr(ClassifierModule, "training_step", step)
    return data, caught.value.run_dir


def test_resume_refuses_data_that_changed_and_says_what(interrupted_on_a_copy, make_image, tmp_path):
    """A class added (the saved head would not fit: a size-mismatch traceback), images replaced (accepted
    silently before), run.json pointed at other data: each refused, saying what changed."""
    import shutil

    from graft.training.pipeline import resume_run

    data, run_dir = interrupted_on_a_copy
    for split in ("train", "val"):
        for index in range(4):
            make_image(data / split / "yellow" / f"{index:03d}.png", color=(220, 220, 30), seed=900 + index)
    with pytest.raises(GraftError, match=r"the data changed since this run started: the classes changed \(added yellow\)"):
        resume_run(run_dir, log=None, progress=False)
    shutil.rmtree(data / "train" / "yellow")
    shutil.rmtree(data / "val" / "yellow")
    for index in range(3):
        make_image(data / "train" / "red" / f"{index:03d}.png", color=(200, 30, 30), seed=700 + index)
    with pytest.raises(GraftError, match=r"the train images changed \(still 36 images, but some were replaced"):
        resume_run(run_dir, log=None, progress=False)
    saved = json.loads((run_dir / "run.json").read_text())
    other = tmp_path / "other"
    for name in ("red", "green"):
        for index in range(6):
            make_image(other / name / f"{index:03d}.png", seed=500 + index)
    (run_dir / "run.json").write_text(json.dumps({**saved, "data": str(other)}))
    with pytest.raises(GraftError, match=r"the classes changed \(removed blue\)"):
        resume_run(run_dir, log=None, progress=False)


def test_ddp_processes_keep_a_batch_on_small_data_and_a_phase_without_batches_is_an_error(tmp_path):
    """issue 24: 36 images over 2 DDP processes in batches of 32 left each process 18 images and no
    whole batch: Lightning skipped the image phase, and the run still said it had fine-tuned."""
    from graft.errors import GraftError
    from graft.runtime import Runtime
    from graft.training.datasets import image_loader
    from graft.training.fit import FitSettings, fit

    images = torch.utils.data.TensorDataset(torch.zeros(36, 3, 8, 8, dtype=torch.uint8), torch.zeros(36, dtype=torch.long))
    assert image_loader(images, batch_size=32, shuffle=True, workers=0).drop_last  # one process: 32 of 36
    assert not image_loader(images, batch_size=32, shuffle=True, workers=0, processes=2).drop_last  # 18 each: keep them
    net = torch.nn.Linear(4, 2)
    few = torch.utils.data.TensorDataset(torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 0]))
    no_batch = torch.utils.data.DataLoader(few, batch_size=8, drop_last=True)  # 5 images, batches of 8
    settings = FitSettings(run_dir=tmp_path, runtime=Runtime(batch_size=8, progress=False))
    with pytest.raises(GraftError, match=r"The head phase trained on no batch: 5 images in batches of 8 over 1 process"):
        fit(net, no_batch, no_batch, param_groups=[{"params": list(net.parameters()), "lr": 0.1}], phase="head",
            epochs=1, settings=settings)
