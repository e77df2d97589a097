"""`hftl shift`: the proxy A-distance between data.train and data.target at every block of a tiny ViT, larger for a
shifted target than for a second sample of the source's own distribution, the frozen passes read back from the
feature cache, a finished run's model/ measured, and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import hftl
from hftl.studies.shift import SHIFT_FILE
from tests.conftest import run_cli, save_tiny_vit, seeded


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> dict[str, Path]:
    """Digits split in two by alternate files (one distribution): `source` and `same`; `shifted` is `same` much
    brighter and noisier, as photos from another camera."""
    from hftl.builtin import write_digits_imagefolder

    root = tmp_path_factory.mktemp("shift-domains")
    pool = write_digits_imagefolder(root / "pool", per_class=20, size=32)
    rng = np.random.default_rng(0)
    for label in sorted(p.name for p in pool.iterdir() if p.is_dir()):
        files = sorted((pool / label).iterdir())
        for name, picked in (("source", files[0::2]), ("same", files[1::2])):
            (root / name / label).mkdir(parents=True)
            for f in picked:
                shutil.copy(f, root / name / label / f.name)
        (root / "shifted" / label).mkdir(parents=True)
        for f in files[1::2]:
            pixels = np.asarray(Image.open(f).convert("RGB"), dtype=np.float64)
            brighter = np.clip(pixels * 0.5 + 110 + rng.normal(0, 40, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(brighter).save(root / "shifted" / label / f.name)
    return {name: root / name for name in ("source", "same", "shifted")}


@pytest.fixture(scope="module")
def config(domains, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shift-config")
    vit = seeded(save_tiny_vit, root / "vit")
    raw = {
        "task": "image-classification",
        "model": {"name_or_path": str(vit)},
        "data": {"train": str(domains["source"]), "target": str(domains["shifted"])},
        "train": {"batch_size": 32, "report_to": "none", "epochs": 1},
        "output_dir": str(root / "runs" / "vit"),
    }
    path = root / "shift.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shift_measures_every_block_and_tells_a_shifted_target_from_a_second_sample(config, domains, tmp_path):
    proc = run_cli("shift", str(config), "--output", str(tmp_path / "shifted"), in_process=True)
    assert "A-distance" in proc.stdout and "domain error" in proc.stdout and "report:" in proc.stdout
    saved = json.loads((tmp_path / "shifted" / SHIFT_FILE).read_text())
    assert saved["source"] == str(domains["source"]) and saved["target"] == str(domains["shifted"])
    assert saved["model"].endswith("vit") and saved["examples"]["target"] == 100
    assert saved["examples"]["source"] == 90 and saved["examples"]["per_domain"] == 90  # 10% held out for validation
    assert [b["block"] for b in saved["blocks"]] == [1, 2]  # the tiny ViT's two encoder layers, bottom first
    assert all(0.0 <= b["a_distance"] <= 2.0 and 0.0 <= b["domain_error"] <= 1.0 for b in saved["blocks"])
    assert saved["verdict"] in proc.stdout and saved["kind"] == "low_level"  # brightness: seen from block 1 on
    assert "adapt.method=coral" in saved["verdict"]  # a ViT has no BatchNorm for AdaBN to re-estimate
    assert saved["reused"] is False and saved["forward_seconds"] > 0
    report = (tmp_path / "shifted" / "shift.md").read_text()
    assert report.startswith("# Domain shift:") and "![A-distance against depth](shift.png)" in report
    with Image.open(tmp_path / "shifted" / "shift.png") as image:
        image.verify()

    # A second sample of the source's own distribution: close at every block, far below the shifted target.
    same = hftl.shift(config, output=tmp_path / "same", data={"target": str(domains["same"])})
    assert [b.block for b in same.blocks] == [1, 2]
    assert max(b.a_distance for b in same.blocks) + 0.8 < min(b["a_distance"] for b in saved["blocks"])
    assert same.reused is False  # the source's pass came from the cache, the new target's did not

    # The first measurement again: both frozen passes read back from the feature cache, the same distances.
    again = hftl.shift(config, output=tmp_path / "shifted")
    assert again.reused and again.forward_seconds == 0.0
    assert [b.a_distance for b in again.blocks] == [b["a_distance"] for b in saved["blocks"]]


def test_shift_of_a_finished_run_measures_its_fine_tuned_model(config, domains, tmp_path):
    run_dir = tmp_path / "run"
    raw = yaml.safe_load(config.read_text())
    del raw["data"]["target"]  # a source-only run; the target comes with the shift command
    hftl.finetune(raw, output_dir=str(run_dir), epochs=1)
    run_cli("shift", str(run_dir), f"data.target={domains['shifted']}", in_process=True)
    saved = json.loads((run_dir / "shift" / SHIFT_FILE).read_text())
    assert saved["model"] == str(run_dir / "model") and len(saved["blocks"]) == 2
    assert (run_dir / "shift" / "shift.png").is_file() and (run_dir / "metrics.json").is_file()


def test_shift_refuses_a_config_without_a_target_and_a_folder_it_does_not_own(config, domains, tmp_path):
    raw = yaml.safe_load(config.read_text())
    no_target = {**raw, "data": {"train": raw["data"]["train"]}}
    with pytest.raises(hftl.ConfigError, match=r"set data.target=PATH"):
        hftl.shift(no_target, output=tmp_path / "x")
    proc = run_cli("shift", str(config), "data.target=null", check=False, in_process=True)
    assert proc.returncode == 2 and "data.target" in proc.stderr
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "metrics.json").write_text("{}")
    proc = run_cli("shift", str(config), "--output", str(taken), check=False, in_process=True)
    assert proc.returncode == 2 and "holds a finished run" in proc.stderr
    few = tmp_path / "few" / "0"
    few.mkdir(parents=True)
    for f in sorted((domains["shifted"] / "0").iterdir())[:5]:
        shutil.copy(f, few / f.name)
    with pytest.raises(hftl.HftlError, match="at least 10 examples of each domain"):
        hftl.shift(config, output=tmp_path / "y", data={"target": str(few.parent)})
    with pytest.raises(hftl.HftlError, match="not a finished hftl run"):
        hftl.shift(tmp_path / "taken")


def test_the_verdict_reads_where_along_the_depth_the_domains_separate():
    from hftl.studies.shift_report import read_shift

    kind, text = read_shift([0.1, 0.3, 0.2], batchnorm=True, held_out=1000)
    assert kind == "alike" and "little to remove" in text and "Few examples" not in text
    kind, text = read_shift([1.9, 1.8, 1.9], batchnorm=True, held_out=1000)
    assert kind == "low_level" and "adapt.method=adabn" in text and "no BatchNorm" not in text
    kind, text = read_shift([1.9, 1.5, 0.9], batchnorm=True, held_out=1000)
    assert kind == "low_level" and "the upper blocks remove part of it (block 3: 0.90)" in text
    kind, text = read_shift([1.3, 1.6, 1.8], batchnorm=True, held_out=1000)
    assert kind == "low_level" and "grows to 1.80 at block 3" in text and "adabn" in text and "dann" in text
    kind, text = read_shift([0.2, 0.9, 1.7], batchnorm=True, held_out=1000)
    assert kind == "top_blocks" and "adapt.method=dann" in text and "self_training" in text
    kind, text = read_shift([0.3, 0.6, 0.9], batchnorm=True, held_out=1000)
    assert kind == "moderate" and "grows with depth" in text and "adabn" not in text
    kind, text = read_shift([0.8, 0.7, 0.8], batchnorm=False, held_out=1000)
    assert kind == "moderate" and "no BatchNorm layers" in text and "adapt.method=coral" in text
    _, text = read_shift([0.4, 0.3], batchnorm=True, held_out=60)  # 0.4 is within the noise of 0.5
    assert "Few examples: each value rests on 60 held-out examples and is uncertain by up to ±0.26" in text
