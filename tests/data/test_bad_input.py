"""Bad input: each user mistake gets a clear error naming the file / row / column / key and the fix,
or a counted, reported skip where skipping is right. Checked in Python (exception type and message)
and, for representative cases, through the real `hftl` command (exit code 2, message, no traceback).
"""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from PIL import Image

from hftl import finetune
from hftl.config import DataConfig, load_config
from hftl.data.modalities import get_modality
from hftl.data.sources import load_splits
from hftl.models.loading import load_model
from hftl.run_folder.layout import prepare_run_dir
from hftl.runs.inference import evaluate_run, predict
from hftl.utils.errors import ConfigError, DataError, HftlError
from tests.conftest import run_cli

IMAGE = get_modality("image-classification")
FAST = {"train.epochs": 1, "train.batch_size": 8, "train.report_to": "none", "data.augment": False}


def png(path: Path, shade: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade % 256, 60, 120)).save(path)
    return path


def corrupt_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(512))
    return path


def truncated_jpeg(path: Path) -> Path:
    """A real JPEG cut in half: the header reads fine, decoding the pixels fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.effect_noise((64, 64), 80).convert("RGB").save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def splits(**data):
    return load_splits(DataConfig(**data), IMAGE, seed=0)


def cli_error(proc, *words: str) -> str:
    """The CLI refused cleanly: exit code 2, every word in the message, no traceback."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "hftl: error:" in proc.stderr
    for word in words:
        assert word in proc.stderr, f"{word!r} not in:\n{proc.stderr[-3000:]}"
    return proc.stderr


# --- shared: a data set with bad files, one finished run, and the CLI cases -----------------------


@pytest.fixture(scope="module")
def messy(digits, tmp_path_factory) -> dict[str, Path]:
    """The digits imagefolder (3 x 30) plus a corrupt PNG, a truncated JPEG and a text file."""
    root = tmp_path_factory.mktemp("messy") / "digits"
    shutil.copytree(digits, root, symlinks=False)
    notes = root / "2" / "notes.txt"
    notes.write_text("not an image")
    return {
        "root": root,
        "corrupt": corrupt_png(root / "0" / "corrupt.png"),
        "truncated": truncated_jpeg(root / "1" / "truncated.jpg"),
        "notes": notes,
    }


@pytest.fixture(scope="module")
def config_yaml(tiny_vit, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "task": "image-classification",
                "model": {"name_or_path": str(tiny_vit)},
                "data": {"train": "set-me", "augment": False},
                "train": {"epochs": 1, "batch_size": 8, "report_to": "none"},
                "output_dir": str(path.parent / "unused"),
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def finished_run(config_yaml, messy, tmp_path_factory) -> Path:
    """One real (1 epoch) run on the messy set: bad files skipped, the run still trains."""
    out = tmp_path_factory.mktemp("runs") / "finished"
    finetune(config_yaml, **{**FAST, "data.train": str(messy["root"]), "output_dir": str(out)})
    return out


@pytest.fixture(scope="module")
def cli(config_yaml, messy, finished_run, tmp_path_factory) -> dict:
    """The representative CLI cases, all at once: each pays hftl's ~8 s import, so they run side by side.

    The rest are checked in-process above and below; these prove the command turns them into exit
    code 2 and one message, never a traceback.
    """
    tmp = tmp_path_factory.mktemp("cli")
    images = sorted((messy["root"] / "0").glob("[0-9]*.png"))[:4]
    no_labels = csv(tmp / "no_labels.csv", "image,kind", [f"{p},zero" for p in images])
    cfg, data = str(config_yaml), f"data.train={messy['root']}"
    cases = {
        "bad_file_error": ["train", cfg, data, "data.on_bad_file=error", f"output_dir={tmp / 'a'}"],
        "missing_label": ["train", cfg, f"data.train={no_labels}", f"output_dir={tmp / 'b'}"],
        "finished_run": ["train", cfg, data, f"output_dir={finished_run}"],
        "no_model": ["train", cfg, data, "model.name_or_path=/nonexistent/model", f"output_dir={tmp / 'c'}"],
        "predict_not_image": ["predict", str(finished_run), str(messy["notes"])],
        "evaluate_not_run": ["evaluate", str(tmp), "--data", str(messy["root"])],
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run_cli, *args, check=False) for name, args in cases.items()}
    return {name: f.result() for name, f in futures.items()} | {"tmp": tmp, "no_labels": no_labels}


# --- corrupt and truncated images ------------------------------------------------------------------


def test_truncated_jpeg_fixture_really_is_truncated(tmp_path):
    path = truncated_jpeg(tmp_path / "t.jpg")
    with Image.open(path) as image, pytest.raises(OSError, match="truncated"):
        image.load()


def test_bad_images_are_skipped_and_counted(messy):
    s = splits(train=str(messy["root"]))
    skipped = dict(s.report.skipped["train"])
    assert set(skipped) == {str(messy["corrupt"]), str(messy["truncated"]), str(messy["notes"])}
    assert "not an image" in skipped[str(messy["corrupt"])]
    assert "truncated" in skipped[str(messy["truncated"])]
    assert len(s.train) + len(s.validation) == 90
    assert s.report.total() == 3 and str(messy["corrupt"]) in s.report.summary()


@pytest.mark.parametrize("which", ["corrupt", "truncated"])
def test_bad_image_with_on_bad_file_error(tmp_path, which):
    make = corrupt_png if which == "corrupt" else truncated_jpeg
    bad = make(tmp_path / "img" / f"bad.{'png' if which == 'corrupt' else 'jpg'}")
    good = [png(tmp_path / "img" / f"{i}.png", i * 30) for i in range(4)]
    rows = [f"img/{p.name},{'ab'[i % 2]}" for i, p in enumerate(good)] + [f"img/{bad.name},a"]
    data = csv(tmp_path / "d.csv", "image,label", rows)
    with pytest.raises(DataError) as info:
        splits(train=str(data), on_bad_file="error")
    message = str(info.value)
    assert str(bad) in message and "row 5" in message
    assert "data.on_bad_file=skip" in message and "Fix or remove the file" in message


def test_finished_run_records_skips(finished_run, messy):
    metrics = json.loads((finished_run / "metrics.json").read_text())
    items = {entry["item"] for entry in metrics["data"]["skipped"]["train"]["items"]}
    assert {str(messy["corrupt"]), str(messy["truncated"]), str(messy["notes"])} <= items
    assert metrics["data"]["skipped_total"] == 3
    assert metrics["data"]["train_examples"] + metrics["data"]["validation_examples"] == 90
    assert (finished_run / "model" / "config.json").is_file()


def test_cli_bad_file_error(cli, messy):
    cli_error(cli["bad_file_error"], "corrupt.png", "data.on_bad_file=skip")


# --- labels and columns ----------------------------------------------------------------------------


def test_missing_label_column(tmp_path):
    png(tmp_path / "a.png")
    data = csv(tmp_path / "d.csv", "image,kind", ["a.png,x", "a.png,y"])
    with pytest.raises(DataError) as info:
        splits(train=str(data))
    message = str(info.value)
    assert "'label'" in message and str(data) in message and "['image', 'kind']" in message
    assert "data.label_column=" in message


def test_cli_missing_label_column(cli):
    cli_error(cli["missing_label"], "'label'", str(cli["no_labels"]), "'kind'", "data.label_column")


def test_label_in_validation_that_train_never_had(tmp_path):
    images = [png(tmp_path / f"{i}.png", i * 40) for i in range(4)]
    corrupt_png(tmp_path / "bad.png")
    train = csv(tmp_path / "train.csv", "image,label", [f"{p.name},{'ab'[i % 2]}" for i, p in enumerate(images)])
    # Row 2 is unreadable and skipped; the unknown label must still be reported at its own row (3).
    val = csv(tmp_path / "val.csv", "image,label", ["0.png,a", "bad.png,b", "1.png,zebra"])
    with pytest.raises(DataError) as info:
        splits(train=str(train), validation=str(val))
    message = str(info.value)
    assert "'zebra'" in message and "row 3 " in message and str(val) in message
    assert "train labels: a, b" in message


def test_missing_label_value_names_the_row(tmp_path):
    images = [png(tmp_path / f"{i}.png", i * 40) for i in range(3)]
    data = csv(tmp_path / "d.csv", "image,label", [f"{images[0].name},a", f"{images[1].name},", f"{images[2].name},b"])
    with pytest.raises(DataError, match=r"row 2 has no label in column 'label'"):
        splits(train=str(data))


# --- empty splits ----------------------------------------------------------------------------------


def test_csv_with_only_a_header(tmp_path):
    data = csv(tmp_path / "d.csv", "image,label", [])
    with pytest.raises(DataError, match=r"data.train=.*d\.csv holds no examples"):
        splits(train=str(data))


def test_empty_validation_file(tmp_path):
    images = [png(tmp_path / f"{i}.png", i * 40) for i in range(4)]
    train = csv(tmp_path / "train.csv", "image,label", [f"{p.name},{'ab'[i % 2]}" for i, p in enumerate(images)])
    val = csv(tmp_path / "val.csv", "image,label", [])
    with pytest.raises(DataError, match=r"data.validation=.*val\.csv holds no examples"):
        splits(train=str(train), validation=str(val))


def test_imagefolder_with_empty_class_folders(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / "pets" / label).mkdir(parents=True)
    with pytest.raises(DataError, match=r"pets holds no images in class folders; expected .*/<label>/<image>"):
        splits(train=str(tmp_path / "pets"))


def test_all_images_corrupt(tmp_path):
    for label in ("cat", "dog"):
        corrupt_png(tmp_path / "pets" / label / "x.png")
    with pytest.raises(DataError) as info:
        splits(train=str(tmp_path / "pets"))
    message = str(info.value)
    assert "train split" in message and "no usable examples" in message and "all 2 were unreadable" in message
    assert "x.png" in message


def test_non_image_file_in_imagefolder_is_a_counted_skip(tmp_path):
    for label in ("cat", "dog"):
        for i in range(3):
            png(tmp_path / "pets" / label / f"{i}.png", i * 50)
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("hello")
    s = splits(train=str(tmp_path / "pets"))
    assert s.report.total() == 1
    assert s.report.skipped["train"][0][0].endswith("notes.txt")


# --- output_dir ------------------------------------------------------------------------------------


def run_config(config_yaml: Path, data: Path, out: Path, **more) -> object:
    return load_config(config_yaml, {**FAST, "data.train": str(data), "output_dir": str(out), **more})


def test_finished_run_is_not_overwritten(config_yaml, messy, finished_run):
    cfg = run_config(config_yaml, messy["root"], finished_run)
    with pytest.raises(HftlError) as info:
        prepare_run_dir(cfg, finished_run)
    assert str(finished_run) in str(info.value) and "overwrite=true" in str(info.value)
    assert (finished_run / "metrics.json").is_file()


def test_cli_finished_run(cli, finished_run):
    cli_error(cli["finished_run"], str(finished_run), "already holds a finished run", "overwrite=true")


def test_unfinished_run_needs_resume(config_yaml, messy, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    run_config(config_yaml, messy["root"], out).save(out / "config.yaml")  # started, never finished
    with pytest.raises(HftlError, match=r"unfinished run.*resume=true"):
        prepare_run_dir(run_config(config_yaml, messy["root"], out), out)


def test_resume_with_changed_config_names_the_key(config_yaml, messy, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    run_config(config_yaml, messy["root"], out).save(out / "config.yaml")
    changed = run_config(config_yaml, messy["root"], out, resume=True, **{"train.learning_rate": 1e-3})
    with pytest.raises(ConfigError) as info:
        prepare_run_dir(changed, out)
    assert "train.learning_rate" in str(info.value) and "0.001" in str(info.value)
    assert prepare_run_dir(run_config(config_yaml, messy["root"], out, resume=True), out) is True  # same config resumes


def test_non_run_folder_refused_even_with_overwrite(config_yaml, messy, tmp_path):
    out = tmp_path / "photos"
    png(out / "holiday.png")
    with pytest.raises(HftlError, match=r"not empty and holds no hftl run"):
        prepare_run_dir(run_config(config_yaml, messy["root"], out, overwrite=True), out)
    assert (out / "holiday.png").is_file()


def test_overwrite_replaces_a_finished_run(config_yaml, finished_run, digits, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(finished_run, out)
    (out / "stale.txt").write_text("from the old run")
    result = finetune(config_yaml, **{**FAST, "data.train": str(digits), "output_dir": str(out), "overwrite": True})
    assert not (out / "stale.txt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["skipped_total"] == 0  # the new run's record, not the messy one's
    assert result.output_dir == out


# --- model -----------------------------------------------------------------------------------------


def test_model_path_that_does_not_exist(config_yaml, messy, tmp_path):
    cfg = run_config(config_yaml, messy["root"], tmp_path / "o", **{"model.name_or_path": "/nonexistent/model"})
    with pytest.raises(HftlError, match=r"model.name_or_path=/nonexistent/model: no such directory"):
        load_model(cfg, IMAGE, ["a", "b"])


def test_cli_model_path_that_does_not_exist(cli):
    cli_error(cli["no_model"], "/nonexistent/model", "no such directory")


def test_model_dir_without_image_processor(config_yaml, messy, tiny_vit, tmp_path):
    model_dir = tmp_path / "bare"
    shutil.copytree(tiny_vit, model_dir)
    (model_dir / "preprocessor_config.json").unlink()
    cfg = run_config(config_yaml, messy["root"], tmp_path / "o", **{"model.name_or_path": str(model_dir)})
    with pytest.raises(HftlError) as info:
        load_model(cfg, IMAGE, ["a", "b"])
    assert "no image processor" in str(info.value) and str(model_dir) in str(info.value)
    assert "save_pretrained" in str(info.value)


def test_folder_that_is_not_a_model(config_yaml, messy, tmp_path):
    cfg = run_config(config_yaml, messy["root"], tmp_path / "o", **{"model.name_or_path": str(messy["root"])})
    with pytest.raises(HftlError, match=r"holds no model \(no config.json\)"):
        load_model(cfg, IMAGE, ["a", "b"])


# --- predict / evaluate ----------------------------------------------------------------------------


def test_predict_on_a_file_that_is_not_an_image(finished_run, messy):
    with pytest.raises(DataError, match=r"notes\.txt: not an image PIL can read"):
        predict(finished_run, [str(messy["notes"])])


def test_cli_predict_on_a_file_that_is_not_an_image(cli, messy):
    cli_error(cli["predict_not_image"], str(messy["notes"]), "not an image")


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path, messy):
    with pytest.raises(HftlError, match=r"is not a finished hftl run.*hftl train"):
        evaluate_run(tmp_path, str(messy["root"]))


def test_cli_evaluate_on_a_folder_that_is_not_a_run(cli):
    cli_error(cli["evaluate_not_run"], str(cli["tmp"]), "not a finished hftl run")


# --- data paths and config keys --------------------------------------------------------------------


def test_missing_train_path():
    with pytest.raises(DataError, match=r"data.train=/nonexistent/x.csv: no such file or directory"):
        splits(train="/nonexistent/x.csv")


def test_unsupported_file_type(tmp_path):
    sheet = tmp_path / "labels.xlsx"
    sheet.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    with pytest.raises(DataError) as info:
        splits(train=str(sheet))
    message = str(info.value)
    assert str(sheet) in message and "'.xlsx'" in message and ".csv" in message and ".parquet" in message
