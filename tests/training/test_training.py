"""Every strategy x (ViT, ResNet) through the real CLI: what changed, what stayed bit-identical, and the
exported model/ loading in transformers.pipeline with the dataset's label names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.utils import set_seed

from hftl.data.modalities import get_modality
from hftl.models.layer_map import build_layer_map
from hftl.models.loading import setup_model
from hftl.run_folder.layout import load_run
from tests.conftest import run_cli

LABELS = ["0", "1", "2"]
STRATEGIES = {
    "head_only": ["strategy.name=head_only"],
    "freeze": ["strategy.name=freeze", "strategy.trainable_blocks=1"],
    "full": ["strategy.name=full"],
    "lora": ["strategy.name=lora"],
    "scratch": ["strategy.name=scratch"],
    "hybrid": ["strategy.name=full", "strategy.head_warmup_epochs=1"],
}


def write_config(tmp_path: Path, model_dir: Path, data_dir: Path) -> Path:
    config = {
        "task": "image-classification",
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(data_dir), "augment": False, "validation_split": 0.2},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "learning_rate": 5e-3,
            "report_to": "none",
            "logging_steps": 1,
            "load_best_at_end": False,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def initial_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], object]:
    """The model exactly as the run started (same seed, same code path), merged if LoRA."""
    cfg, _ = load_run(run_dir)
    set_seed(cfg.train.seed)
    model, _, layer_map, _ = setup_model(cfg, get_modality(cfg.task), LABELS)
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    return {k: v.clone() for k, v in model.state_dict().items()}, layer_map


@pytest.fixture(scope="module", params=["vit", "resnet"])
def arch(request, tiny_vit, tiny_resnet):
    return request.param, {"vit": tiny_vit, "resnet": tiny_resnet}[request.param]


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_strategy_trains_through_cli_and_changes_exactly_its_parts(strategy, arch, digits, tmp_path):
    arch_name, model_dir = arch
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, model_dir, digits)
    proc = run_cli("train", str(config), f"output_dir={run_dir}", *STRATEGIES[strategy], in_process=True)
    assert "what trains" in proc.stdout

    for item in ("config.yaml", "model/config.json", "model/model.safetensors", "README.md", "metrics.json", "checkpoints"):
        assert (run_dir / item).exists(), item
    assert list((run_dir / "model").glob("preprocessor_config.json"))

    init, layer_map = initial_state(run_dir)
    from transformers import AutoModelForImageClassification

    final = AutoModelForImageClassification.from_pretrained(run_dir / "model").state_dict()
    assert set(final) <= set(init)
    changed = {layer_map.part_of(k) for k in final if not torch.equal(final[k], init[k])}
    unchanged = {layer_map.part_of(k) for k in final if torch.equal(final[k], init[k]) and "num_batches" not in k}
    n = len(layer_map.blocks)
    top = {f"block.{n - 1}"} | ({"neck"} if layer_map.neck else set())
    everything = set(layer_map.parts) - ({"neck"} if not layer_map.neck else set())
    if strategy == "head_only":
        assert changed == {"head"}  # every backbone weight and BN statistic bit-identical
    elif strategy == "freeze":
        assert changed == {"head"} | top
    elif strategy == "lora":
        assert "head" in changed and "embeddings" not in changed and changed <= {"head", *(f"block.{i}" for i in range(n))}
        adapted = {k for k in final if not torch.equal(final[k], init[k]) and layer_map.part_of(k) != "head"}
        assert adapted and all(k.endswith(("q_proj.weight", "v_proj.weight", "convolution.weight")) for k in adapted)
    else:  # full, scratch, hybrid: everything trains
        assert changed == everything, f"unchanged parts: {unchanged}"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["labels"] == LABELS
    assert len(metrics["history"]) == 2
    if strategy == "hybrid":
        assert [h["phase"] for h in metrics["history"]] == ["head_warmup", "full"]
    card = (run_dir / "README.md").read_text()
    assert "model-index" in card and f"`{metrics['strategy']['name']}`" in card and "trainable parameters" in card

    from transformers import pipeline

    classify = pipeline("image-classification", model=str(run_dir / "model"))
    preds = classify(str(next((digits / "1").iterdir())), top_k=3)
    assert {p["label"] for p in preds} == set(LABELS)


def test_lora_adapter_loads_on_the_untouched_base_and_matches_the_merged_export(tiny_vit, digits, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    run_dir = tmp_path / "run"
    run_cli("train", str(write_config(tmp_path, tiny_vit, digits)), f"output_dir={run_dir}", "strategy=lora", in_process=True)
    base = AutoModelForImageClassification.from_pretrained(
        tiny_vit,
        num_labels=3,
        ignore_mismatched_sizes=True,
        id2label=dict(enumerate(LABELS)),
        label2id={v: i for i, v in enumerate(LABELS)},
    )
    original = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    for name, tensor in peft_model.named_parameters():
        if ".base_layer." in name:  # the unmerged model's frozen weights are exactly the pretrained ones
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(tensor, original[key]), key
    merged = AutoModelForImageClassification.from_pretrained(run_dir / "model").eval()
    assert merged.config.id2label == dict(enumerate(LABELS))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(pixel_values=x).logits, merged(pixel_values=x).logits, atol=1e-5, rtol=1e-4)


def test_learnable_set_reaches_clearly_above_chance(tiny_resnet, digits, tmp_path):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_resnet, digits)
    run_cli(
        "train",
        str(config),
        f"output_dir={run_dir}",
        "strategy=full",
        "train.epochs=4",
        "train.learning_rate=1e-2",
        in_process=True,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.7  # chance is 1/3


def plain_forward(model_dir: Path, paths: list[Path]) -> torch.Tensor:
    """Logits of `paths` from model/ with transformers alone: the checkpoint's image processor, one forward pass."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    images = [Image.open(p).convert("RGB") for p in paths]
    with torch.no_grad():
        return model(**AutoImageProcessor.from_pretrained(model_dir)(images=images, return_tensors="pt")).logits


def test_predict_and_evaluate_on_a_finished_run(tiny_resnet, digits, tmp_path):
    """`hftl evaluate` scores model/ as a plain transformers forward pass does; `hftl predict` gives its softmax."""
    from sklearn.metrics import accuracy_score, f1_score

    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_resnet, digits)
    run_cli("train", str(config), f"output_dir={run_dir}", "strategy=full", "train.learning_rate=1e-2", in_process=True)
    paths = sorted((digits / label / p.name for label in LABELS for p in (digits / label).iterdir()), key=str)
    labels = torch.tensor([LABELS.index(p.parent.name) for p in paths])
    logits = plain_forward(run_dir / "model", paths)
    predicted = logits.argmax(-1)
    assert len(set(predicted.tolist())) > 1  # a model that answers one class for everything would make a weak check

    out = run_cli("evaluate", str(run_dir), "--data", str(digits))  # as a user runs it: a fresh process
    metrics = json.loads(out.stdout[out.stdout.index("{") :])
    assert metrics["examples"] == 90
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-12)
    assert metrics["f1"] == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0), abs=1e-12)
    assert metrics["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)

    images = [str(p) for p in paths[-2:]]
    out = run_cli("predict", str(run_dir), *images, "--json", "--top-k", "2", in_process=True)
    parsed = json.loads(out.stdout)
    assert [p["input"] for p in parsed] == images
    probabilities = logits[-2:].softmax(-1)
    for item, probs in zip(parsed, probabilities):
        top = probs.topk(2)
        assert [p["label"] for p in item["predictions"]] == [LABELS[i] for i in top.indices.tolist()]
        assert [p["score"] for p in item["predictions"]] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_python_api_finetune_with_overrides(tiny_vit, digits, tmp_path):
    from hftl import finetune

    result = finetune(
        str(write_config(tmp_path, tiny_vit, digits)),
        strategy="head_only",
        epochs=1,
        output_dir=str(tmp_path / "api-run"),
        train={"batch_size": 8},
    )
    assert result.output_dir == tmp_path / "api-run"
    assert set(result.metrics) >= {"accuracy", "f1", "precision", "recall"}
    assert 0 < result.trainable_parameters < result.total_parameters
    saved = yaml.safe_load((result.output_dir / "config.yaml").read_text())
    assert saved["strategy"]["name"] == "head_only" and saved["train"]["batch_size"] == 8


def test_layer_map_of_exported_model_is_unchanged(tiny_resnet):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tiny_resnet)
    assert len(build_layer_map(model).blocks) == 3
