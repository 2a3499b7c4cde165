"""Labelling the suggested images (graft.labelling, its page's HTTP API, `graft suggest --label`), on the
suggestions of the session's tiny linear-probe run."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import pytest

from conftest import make_image
from graft.errors import GraftError
from graft.labelling import SKIP, LabellingSession, read_labels_file, skipped_images
from test_cli import run_main


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory) -> Path:
    """Eight unlabelled images: two each of purple and yellow (between two classes), red, green, blue and
    grey ones."""
    folder = tmp_path_factory.mktemp("unlabelled")
    colours = {"purple": (120, 30, 120), "yellow": (120, 120, 30), "red": (200, 30, 30), "green": (30, 180, 40),
               "blue": (30, 40, 200), "grey": (128, 128, 128)}
    for index, (name, colour) in enumerate(colours.items()):
        for number in range(2 if name in ("purple", "yellow") else 1):
            make_image(folder / f"{name}{number}.png", color=colour, seed=2000 + 10 * index + number)
    return folder


@pytest.fixture(scope="module")
def suggested(linear_probe_run, unlabelled):
    """graft suggest's five suggestions on `unlabelled`, from the real run, and the run's classes."""
    from graft.suggest import suggest_for_run

    found = suggest_for_run(linear_probe_run.run_dir, [unlabelled], count=5, progress=False)
    assert len(found) >= 4
    return list(found), list(linear_probe_run.record.classes)


@pytest.fixture
def images(suggested, unlabelled, tmp_path):
    """The suggestions with their images copied into tmp_path/work/images (a folder of the test's own),
    and the run's classes."""
    items, classes = suggested
    folder = tmp_path / "work" / "images"
    shutil.copytree(unlabelled, folder)
    return [dataclasses.replace(item, path=str(folder / Path(item.path).name)) for item in items], classes


def _rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "label"]
    return [tuple(row) for row in rows[1:]]


def _name(item) -> str:
    return Path(item.path).name


# -- the library --------------------------------------------------------------------------------------


def test_every_decision_is_written_at_once_relative_to_the_csv(images, tmp_path):
    items, classes = images
    labels = tmp_path / "work" / "labels.csv"
    session = LabellingSession(items, classes, labels_csv=labels)
    assert not labels.exists()  # nothing decided, nothing written
    session.decide(items[0].rank, classes[0])
    assert _rows(labels) == [(f"images/{_name(items[0])}", classes[0])]
    session.decide(items[1].rank, SKIP)
    session.decide(items[2].rank, classes[2])
    assert _rows(labels) == [(f"images/{_name(items[0])}", classes[0]), (f"images/{_name(items[2])}", classes[2])]
    session.decide(items[0].rank, SKIP)  # a decision changed: the row goes
    assert _rows(labels) == [(f"images/{_name(items[2])}", classes[2])]
    assert session.progress() == f"1 of {len(items)} labelled, 2 skipped"
    assert sorted(entry.name for entry in labels.parent.iterdir() if entry.is_file()) == [
        "labels.csv", "labels.skipped.csv"]  # the skips beside the labels; no temporary file

    # graft reads it as training data: the image, with its class
    from graft.data.labels import read_label_file

    read = read_label_file(labels)
    assert [(row.file, row.labels) for row in read.rows] == [(Path(items[2].path), (classes[2],))]


def test_a_skip_is_written_beside_the_labels_and_a_new_session_shows_it_skipped(images, tmp_path):
    """Issue 26: a skip is kept (labels.skipped.csv beside labels.csv: the labels CSV stays a label file
    graft trains on, where a "skip" row would be a class), so a new session over the same suggestions
    shows it skipped; a skip changed into a label leaves the skipped file."""
    items, classes = images
    labels = tmp_path / "work" / "labels.csv"
    skipped = tmp_path / "work" / "labels.skipped.csv"
    session = LabellingSession(items, classes, labels_csv=labels)
    session.decide(items[0].rank, SKIP)
    session.decide(items[1].rank, SKIP)
    session.decide(items[2].rank, classes[1])
    assert _rows(labels) == [(f"images/{_name(items[2])}", classes[1])]
    with skipped.open(newline="") as handle:
        assert list(csv.reader(handle)) == [["path", "decision"], [f"images/{_name(items[0])}", SKIP],
                                            [f"images/{_name(items[1])}", SKIP]]
    again = LabellingSession(items, classes, labels_csv=labels)
    assert [again.decision(item.rank) for item in items[:4]] == [SKIP, SKIP, classes[1], None]
    assert again.continued == 3 and again.progress() == f"1 of {len(items)} labelled, 2 skipped"
    again.decide(items[1].rank, classes[0])  # no longer skipped: its row moves to the labels
    assert skipped_images(labels) == [Path(items[0].path)]
    assert _rows(labels) == [(f"images/{_name(items[1])}", classes[0]), (f"images/{_name(items[2])}", classes[1])]
    assert sorted(entry.name for entry in labels.parent.iterdir() if entry.is_file()) == ["labels.csv",
                                                                                         "labels.skipped.csv"]


def test_a_skipped_file_graft_did_not_write_is_refused_and_left_alone(images, tmp_path):
    items, classes = images
    skipped = tmp_path / "work" / "labels.skipped.csv"
    skipped.write_text("my notes\n")
    with pytest.raises(GraftError, match="labels.skipped.csv exists and is not the list of skipped images"):
        LabellingSession(items, classes, labels_csv=tmp_path / "work" / "labels.csv")
    assert skipped.read_text() == "my notes\n"


def test_an_image_outside_the_csvs_folder_is_written_with_its_absolute_path(images, tmp_path):
    items, classes = images
    labels = tmp_path / "elsewhere" / "labels.csv"
    session = LabellingSession(items, classes, labels_csv=labels)
    session.decide(items[1].rank, classes[1])
    assert _rows(labels) == [(str(Path(items[1].path).absolute()), classes[1])]


def test_a_graft_labels_file_is_continued_and_its_other_rows_kept(images, tmp_path):
    items, classes = images
    labels = tmp_path / "work" / "labels.csv"
    earlier = [("images/from-an-earlier-round.png", classes[1]), (f"images/{_name(items[1])}", classes[2])]
    labels.write_text("path,label\n" + "".join(f"{path},{label}\n" for path, label in earlier))
    session = LabellingSession(items, classes, labels_csv=labels)
    assert session.continued == 1 and session.decision(items[1].rank) == classes[2]
    assert session.decision(items[0].rank) is None
    assert session.progress().startswith(f"1 of {len(items)} labelled")
    session.decide(items[0].rank, classes[0])
    assert _rows(labels) == [earlier[0], (f"images/{_name(items[0])}", classes[0]), earlier[1]]


@pytest.mark.parametrize("text", ["id,target\n1,cat\n", "path;label\nimages/a.png;red\n", "", "\x89PNG\x00\xff\xfe"])
def test_a_file_graft_did_not_write_is_refused_and_left_alone(images, tmp_path, text):
    items, classes = images
    labels = tmp_path / "work" / "labels.csv"
    labels.write_bytes(text.encode("latin-1"))
    with pytest.raises(GraftError, match="is not a labels file graft writes") as error:
        LabellingSession(items, classes, labels_csv=labels)
    assert str(labels) in str(error.value) and "--labels" in str(error.value)
    assert labels.read_bytes() == text.encode("latin-1")


def test_a_continued_file_naming_an_unknown_class_for_a_suggested_image_is_refused(images, tmp_path):
    items, classes = images
    labels = tmp_path / "work" / "labels.csv"
    labels.write_text(f"path,label\nimages/{_name(items[0])},purple\n")
    with pytest.raises(GraftError, match="'purple', which is not one of the run's classes"):
        LabellingSession(items, classes, labels_csv=labels)


def test_an_unknown_class_or_rank_is_refused_and_nothing_written(images, tmp_path):
    items, classes = images
    labels = tmp_path / "work" / "labels.csv"
    session = LabellingSession(items, classes, labels_csv=labels)
    with pytest.raises(GraftError, match="'purple' is not one of the run's classes.*new class folder by hand"):
        session.decide(items[0].rank, "purple")
    with pytest.raises(GraftError, match="No suggested image is ranked 99"):
        session.decide(99, classes[0])
    assert not labels.exists() and session.decision(items[0].rank) is None


def test_copy_never_overwrites_names_clashes_afresh_and_never_copies_a_skipped_image(images, tiny_dataset, tmp_path):
    items, classes = images
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    session = LabellingSession(items, classes, labels_csv=tmp_path / "labels.csv", data=data)
    session.decide(items[0].rank, classes[0])
    session.decide(items[1].rank, classes[0])
    session.decide(items[2].rank, SKIP)
    clash = data / "train" / classes[0] / _name(items[1])
    clash.write_bytes(b"someone else's file")  # a name already taken, by other bytes
    before = sorted(path.name for path in (data / "train").rglob("*"))

    result = session.copy_into_data()
    assert result.folder == data / "train"
    assert [(image.target, image.copied) for image in result.images] == [
        (data / "train" / classes[0] / _name(items[0]), True),
        (data / "train" / classes[0] / f"{Path(items[1].path).stem}-1.png", True)]
    assert clash.read_bytes() == b"someone else's file"
    for image in result.images:
        assert image.target.read_bytes() == image.source.read_bytes()
    after = sorted(path.name for path in (data / "train").rglob("*"))
    assert sorted(set(after) - set(before)) == sorted({_name(items[0]), f"{Path(items[1].path).stem}-1.png"})
    assert _name(items[2]) not in after  # skipped: never copied
    message = result.message()
    assert f"Copied 2 labelled image(s) into {data / 'train'}" in message and f"graft train {data}" in message
    assert "new name" in message

    again = session.copy_into_data()  # the same bytes are there: nothing is copied twice
    assert again.copied == [] and len(again.already) == 2
    assert sorted(path.name for path in (data / "train").rglob("*")) == after


def test_copy_into_a_folder_of_class_folders(images, tiny_flat_dataset, tmp_path):
    items, classes = images
    data = tmp_path / "flat"
    shutil.copytree(tiny_flat_dataset, data)
    session = LabellingSession(items, classes, labels_csv=tmp_path / "labels.csv", data=data)
    session.decide(items[0].rank, classes[1])
    result = session.copy_into_data()
    assert [image.target for image in result.copied] == [data / classes[1] / _name(items[0])]


def test_a_data_labelled_by_a_label_file_is_refused_naming_it(images, tiny_multilabel, tmp_path):
    items, classes = images
    before = sorted(tiny_multilabel.parent.rglob("*"))
    session = LabellingSession(items, classes, labels_csv=tmp_path / "labels.csv", data=tiny_multilabel)
    session.decide(items[0].rank, classes[0])
    with pytest.raises(GraftError, match="labelled by a label file") as error:
        session.copy_into_data()
    assert str(tiny_multilabel) in str(error.value)
    assert "labelled by a label file" in (session.copy_problem() or "")
    assert sorted(tiny_multilabel.parent.rglob("*")) == before


def test_read_labels_file_reads_what_the_session_wrote(images, tmp_path):
    items, classes = images
    labels = tmp_path / "work" / "labels.csv"
    session = LabellingSession(items, classes, labels_csv=labels)
    session.decide(items[3].rank, classes[1])
    assert read_labels_file(labels) == [(f"images/{_name(items[3])}", classes[1])]
    assert read_labels_file(tmp_path / "absent.csv") == []


# -- the page's HTTP API ------------------------------------------------------------------------------


@pytest.fixture
def client(images, tiny_dataset, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from graft.serve.labelling import create_labelling_app

    items, classes = images
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    session = LabellingSession(items, classes, labels_csv=tmp_path / "work" / "labels.csv", data=data)
    with TestClient(create_labelling_app(session)) as test_client:
        yield test_client, session


def test_the_http_api_labels_and_copies(client, tmp_path):
    import io

    from PIL import Image

    test_client, session = client
    items, classes = session.items, session.classes
    page = test_client.get("/")
    assert page.status_code == 200 and "Label the suggested images" in page.text
    state = test_client.get("/api/state").json()
    assert state["classes"] == classes and state["total"] == len(items)
    assert [item["rank"] for item in state["items"]] == [item.rank for item in items]
    assert state["items"][0]["reason"] == items[0].reason and state["items"][0]["decision"] is None
    assert state["items"][0]["guesses"][0]["class"] == items[0].top[0]
    assert state["labels_csv"] == str(session.labels_csv.absolute()) and state["copy_problem"] is None

    image = test_client.get(f"/images/{items[0].rank}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(image.content)).size == (40, 40)

    answer = test_client.post("/api/decisions", json={"rank": items[0].rank, "label": classes[2]})
    assert answer.status_code == 200 and answer.json()["progress"] == f"1 of {len(items)} labelled"
    assert _rows(session.labels_csv) == [(f"images/{_name(items[0])}", classes[2])]
    skipped = test_client.post("/api/decisions", json={"rank": items[3].rank, "label": SKIP}).json()
    assert skipped["items"][3]["decision"] == SKIP and skipped["skipped"] == 1  # and after a reload:
    assert test_client.get("/api/state").json()["items"][3]["decision"] == SKIP
    assert skipped_images(session.labels_csv) == [Path(items[3].path)]
    assert skipped["skipped_csv"] == str(session.labels_csv.absolute().with_name("labels.skipped.csv"))
    refused = test_client.post("/api/decisions", json={"rank": items[1].rank, "label": "purple"})
    assert refused.status_code == 400 and "not one of the run's classes" in refused.json()["detail"]
    assert test_client.post("/api/decisions", json={"rank": 99, "label": classes[0]}).status_code == 404

    copied = test_client.post("/api/copy").json()
    target = tmp_path / "data" / "train" / classes[2] / _name(items[0])
    assert copied["copy"]["copied"] == [{"source": items[0].path, "target": str(target), "label": classes[2]}]
    assert target.read_bytes() == Path(items[0].path).read_bytes()
    assert "Next: graft train" in copied["state"]["next"]


def test_only_suggested_images_are_served(client, tmp_path):
    test_client, session = client
    secret = tmp_path / "secret.png"
    make_image(secret)
    assert test_client.get("/images/99").status_code == 404
    for path in (f"/images/{secret}", "/images/..%2F..%2Fsecret.png", f"/images?path={secret}",
                 f"/images/{session.items[0].rank}/../../secret.png"):
        response = test_client.get(path)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert response.headers["content-type"] != "image/jpeg"


# -- the command --------------------------------------------------------------------------------------


def test_graft_suggest_label_refuses_bad_options_before_reading_an_image(linear_probe_run, unlabelled, tiny_multilabel,
                                                                        tmp_path, capsys, monkeypatch):
    import graft.suggest

    monkeypatch.setattr(graft.suggest, "suggest_for_run", lambda *a, **k: pytest.fail("suggested before checking"))
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("id,target\n1,cat\n")
    (tmp_path / "mine.skipped.csv").write_text("id,target\n1,cat\n")
    cases = [
        (["--data", tmp_path], "--data: only with --label"),
        (["--labels", tmp_path / "mine.csv"], "mine.skipped.csv exists and is not the list of skipped images"),
        (["--label", "--json"], "choose one"),
        (["--label", "--labels", foreign], "is not a labels file graft writes"),
        (["--label", "--data", tiny_multilabel, "--labels", tmp_path / "x.csv"], "labelled by a label file"),
    ]
    for args, message in cases:
        code, output = run_main(["suggest", linear_probe_run.run_dir, unlabelled, *args], capsys, monkeypatch)
        assert code == 2, output
        assert message in output and "Traceback" not in output, output
    assert foreign.read_text() == "id,target\n1,cat\n"


def test_graft_suggest_label_serves_the_page_then_says_the_next_step(linear_probe_run, unlabelled, tiny_dataset,
                                                                     tmp_path, capsys, monkeypatch):
    """The command as typed, its server replaced by a person's requests through the app it built."""
    from fastapi.testclient import TestClient

    import graft.serve.server

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    labels = tmp_path / "labels.csv"
    seen = {}

    def person(app, sock, **_):
        sock.close()
        with TestClient(app) as test_client:
            state = test_client.get("/api/state").json()
            seen["state"] = state
            first = state["items"][0]
            test_client.post("/api/decisions", json={"rank": first["rank"], "label": state["classes"][0]})
            test_client.post("/api/copy")

    monkeypatch.setattr(graft.serve.server, "run", person)
    from test_suggest import _main

    code, output = _main(["suggest", linear_probe_run.run_dir, unlabelled, "--count", "3", "--label", "--labels",
                          labels, "--data", data, "--port", "0", "--no-browser"], capsys, monkeypatch)
    assert code == 0, output
    assert "Label them at http://127.0.0.1:" in output and "rank" in output  # the table, then the page
    state = seen["state"]
    name = state["items"][0]["name"]
    assert _rows(labels) == [(str((unlabelled / name).absolute()), state["classes"][0])]
    assert (data / "train" / state["classes"][0] / name).read_bytes() == (unlabelled / name).read_bytes()
    assert f"1 of {state['total']} labelled in {labels}" in output
    assert f"Next: graft train {data}" in output


def test_graft_suggest_leaves_out_the_images_skipped_in_an_earlier_round(suggested, tmp_path, linear_probe_run,
                                                                         unlabelled, capsys, monkeypatch):
    """Issue 26: an image skipped on the page is not suggested again by the next `graft suggest`
    (with the same --labels); every image skipped is a clear error."""
    import json

    from test_suggest import _main

    items, classes = suggested
    labels = tmp_path / "labels.csv"
    LabellingSession(items, classes, labels_csv=labels).decide(items[0].rank, SKIP)
    code, output = _main(["suggest", linear_probe_run.run_dir, unlabelled, "--count", "5", "--labels", labels,
                          "--json"], capsys, monkeypatch)
    assert code == 0, output
    answer = json.loads(output)
    paths = [item["path"] for item in answer["suggestions"]]
    assert items[0].path not in paths and len(paths) >= 4 and answer["images"] == 7
    assert f"1 image(s) skipped in an earlier labelling round left out ({tmp_path / 'labels.skipped.csv'})" in \
        answer["notes"]
    (tmp_path / "labels.skipped.csv").write_text("path,decision\n" + "".join(f"{path},skip\n"
                                                                          for path in sorted(unlabelled.iterdir())))
    code, output = run_main(["suggest", linear_probe_run.run_dir, unlabelled, "--labels", labels], capsys, monkeypatch)
    assert code == 2 and "Every one of the 8 unlabelled images was skipped" in output and "Traceback" not in output
