"""Image checkpoints whose processor does not make pixel_values: ImageGPT's colour-cluster token ids."""

from __future__ import annotations

import numpy as np
import transformers as tf


def test_imagegpt_trains_on_its_processors_token_ids_and_reloads(digits, tmp_path):
    from transformers import pipeline

    from hftl import finetune

    folder = tmp_path / "imagegpt"
    clusters = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    config = tf.ImageGPTConfig(vocab_size=17, n_positions=64, n_embd=32, n_layer=2, n_head=2, num_labels=2)
    tf.ImageGPTForImageClassification(config).save_pretrained(folder)
    tf.ImageGPTImageProcessor(clusters=clusters, size={"height": 8, "width": 8}).save_pretrained(folder)
    result = finetune(
        {"task": "image-classification", "model": {"name_or_path": str(folder)}, "data": {"train": str(digits)}},
        strategy="freeze",
        epochs=1,
        output_dir=str(tmp_path / "run"),
        train={"batch_size": 8, "report_to": "none"},
    )
    assert 0 < result.trainable_parameters < result.total_parameters
    scores = pipeline("image-classification", model=str(result.output_dir / "model"))(
        str(next((digits / "1").iterdir())), top_k=None
    )
    assert sorted(s["label"] for s in scores) == ["0", "1", "2"]
