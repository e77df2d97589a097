"""timm checkpoints, the way transformers loads them (TimmWrapper): trained by hftl, reloaded by pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import require
from tests.training.test_training import write_config


def save_tiny_timm(folder: Path, architecture: str) -> Path:
    """A timm test architecture (random weights) saved as transformers saves a timm Hub checkpoint."""
    require("timm", "pip install -e . (timm is a dependency)")
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture=architecture, num_labels=5))
    # A timm checkpoint's preprocessing lives in its config.json (`pretrained_cfg`), as on the Hub.
    model.config.pretrained_cfg = dict(model.timm_model.pretrained_cfg, input_size=(3, 64, 64))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("strategy", ["head_only", "lora"])
def test_timm_resnet_trains_and_reloads_in_pipeline(strategy, digits, tmp_path):
    from transformers import pipeline

    from hftl import finetune

    model_dir = save_tiny_timm(tmp_path / "timm-resnet", "test_resnet")
    result = finetune(
        str(write_config(tmp_path, model_dir, digits)), strategy=strategy, epochs=1, output_dir=str(tmp_path / "run")
    )
    assert 0 < result.trainable_parameters < result.total_parameters
    before = load_file(str(model_dir / "model.safetensors"))
    after = load_file(str(result.output_dir / "model" / "model.safetensors"))
    # The classifier is the new head (3 labels, not the checkpoint's 5); the stem is frozen in both strategies.
    assert after["timm_model.fc.weight"].shape[0] == 3
    assert torch.equal(after["timm_model.conv1.0.weight"], before["timm_model.conv1.0.weight"])
    if strategy == "head_only":
        assert torch.equal(after["timm_model.layer2.0.conv1.weight"], before["timm_model.layer2.0.conv1.weight"])
    else:  # merged adapters changed the adapted convolutions
        assert not torch.equal(after["timm_model.layer2.0.conv1.weight"], before["timm_model.layer2.0.conv1.weight"])
    classify = pipeline("image-classification", model=str(result.output_dir / "model"))
    image = next((digits / "1").iterdir())
    scores = classify(str(image), top_k=None)
    assert sorted(s["label"] for s in scores) == ["0", "1", "2"]
