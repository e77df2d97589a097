"""`hftl probe`: every block of every model scored (linear probe, LogME) from features pooled by forward hooks,
the pass stored in the feature cache and read back, a ranking and report, Kendall tau against a fine-tuned
study, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import hftl
from hftl.studies.logme import logme
from hftl.studies.probe import probe
from tests.conftest import run_cli, save_tiny_bert, save_tiny_vit
from tests.text_data import sentiment_rows, write_csv


@pytest.fixture(scope="module")
def two_vits(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vits")
    found = {}
    for seed, name in enumerate(("vit-a", "vit-b")):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            found[name] = save_tiny_vit(root / name)
    return found


@pytest.fixture(scope="module")
def digits_config(digits, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("probe-config") / "probe.yaml"
    config = {
        "task": "image-classification",
        "model": {"name_or_path": "replaced/by-models"},
        "data": {"train": str(digits), "validation_split": 0.3},
        "train": {"batch_size": 16, "report_to": "none", "epochs": 2, "learning_rate": 1e-2},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_probe_scores_every_block_ranks_and_reuses_the_cached_pass(two_vits, digits_config, tmp_path):
    out = tmp_path / "probe"
    models = ",".join(str(p) for p in two_vits.values())
    proc = run_cli("probe", str(digits_config), "--models", models, f"output_dir={out}", in_process=True)
    assert "rank" in proc.stdout and "report:" in proc.stdout
    saved = json.loads((out / "probe.json").read_text())
    assert saved["task"] == "image-classification" and saved["metric"] == "f1" and saved["rank_by"] == "logme"
    assert set(saved["models"]) == {"vit-a", "vit-b"}
    for name, entry in saved["models"].items():
        assert entry["checkpoint"] == str(two_vits[name])
        assert [b["block"] for b in entry["blocks"]] == [1, 2]  # the tiny ViT's two encoder layers
        for block in entry["blocks"]:
            assert 0.0 <= block["linear"] <= 1.0 and np.isfinite(block["logme"]) and block["seconds"] > 0
            assert 0.0 <= block["first_token"] <= 1.0  # the ViT's [CLS] position, scored on its own
        assert entry["forward_seconds"] > 0 and entry["reused"] is False
        assert entry["best_block"] in (1, 2)
    last_logme = {saved["models"][n]["checkpoint"]: saved["models"][n]["blocks"][-1]["logme"] for n in saved["models"]}
    assert saved["ranking"] == sorted(last_logme, key=lambda c: -last_logme[c])

    report = (out / "report.md").read_text()
    assert report.startswith("# Transferability probe: image-classification") and "plots/probe_depth.png" in report
    with Image.open(out / "plots" / "probe_depth.png") as image:
        image.verify()
    assert "data:image/png;base64," in (out / "report.html").read_text()
    listed = run_cli("cache", "list", in_process=True).stdout
    assert listed.count("(probe)") >= 4  # train and validation of each model

    # The same probe again, from Python: every pass read back from the cache, the same scores.
    again = hftl.probe(digits_config, list(two_vits.values()), output_dir=out, rank_by="linear")
    assert all(m.reused and m.forward_seconds == 0.0 for m in again.models)
    for m in again.models:
        stored = saved["models"][m.name]["blocks"]
        assert [(b.linear, b.logme, b.first_token) for b in m.blocks] == [
            (b["linear"], b["logme"], b["first_token"]) for b in stored
        ]
    assert json.loads((out / "probe.json").read_text())["rank_by"] == "linear"


def test_block_features_are_each_layers_hidden_states_averaged_over_real_tokens(tmp_path):
    """The hooks and pooling against the model's own hidden states: block i is hidden_states[i + 1] of
    transformers' output, averaged over the tokens the attention mask marks (padding left out)."""
    from hftl.config import load_config
    from hftl.data.modalities import get_modality
    from hftl.data.sources import load_splits
    from hftl.models.loading import setup_model
    from hftl.runs.finetune import setup_data
    from hftl.studies.probe_features import block_features

    bert = save_tiny_bert(tmp_path / "bert")
    data_file = write_csv(tmp_path / "r.csv", sentiment_rows(24))
    cfg = load_config({"task": "text-classification", "model": {"name_or_path": str(bert)}, "data": {"train": str(data_file)}})
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, 0)
    model, processor, layer_map, _ = setup_model(cfg, modality, splits.labels)
    data = setup_data(cfg, modality, processor, splits)
    found = block_features(model, layer_map, data.train, data.collate, processor, {"model": "bert", "split": "t"}, {},
                           batch_size=5, root=tmp_path / "cache")  # fmt: skip
    assert len(found.blocks) == 2 and not found.reused
    batch = data.collate([data.train[i] for i in range(len(data.train))])  # one batch, padded to the longest
    with torch.no_grad():
        hidden = model(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    for i, (pooled, first) in enumerate(zip(found.blocks, found.first, strict=True)):
        expected = (hidden[i + 1] * mask).sum(1) / mask.sum(1)
        np.testing.assert_allclose(pooled, expected.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(first, hidden[i + 1][:, 0].numpy(), rtol=1e-4, atol=1e-5)  # the [CLS] token
    again = block_features(model, layer_map, data.train, data.collate, processor, {"model": "bert", "split": "t"}, {},
                           batch_size=5, root=tmp_path / "cache")  # fmt: skip
    assert again.reused and all(np.array_equal(a, b) for a, b in zip(again.blocks, found.blocks))
    assert all(np.array_equal(a, b) for a, b in zip(again.first, found.first, strict=True))


def test_kendall_tau_against_a_fine_tuned_model_study(two_vits, digits_config, tmp_path):
    from scipy.stats import kendalltau

    models = ",".join(str(p) for p in two_vits.values())
    study_dir = tmp_path / "study"
    run_cli("compare", str(digits_config), f"output_dir={study_dir}", "--strategies", "head_only", "--models", models,
            in_process=True)  # fmt: skip
    result = probe(digits_config, models, output_dir=tmp_path / "probe", study=study_dir)
    tuned = {r["model"]: r["validation_f1"] for r in json.loads((study_dir / "study.json").read_text())["rows"]}
    assert {m.name: m.fine_tuned for m in result.models} == tuned
    expected = kendalltau([m.blocks[-1].logme for m in result.models], [tuned[m.name] for m in result.models]).statistic
    assert result.kendall_tau["logme"] == pytest.approx(expected if np.isfinite(expected) else 0.0)
    assert set(result.kendall_tau) == {"logme", "linear"}
    report = result.report_md.read_text()
    assert "Kendall tau" in report and "fine-tuned f1" in report


def test_probe_refuses_what_it_cannot_score_and_keeps_off_runs(tiny_bert, digits_config, tmp_path):
    data = tmp_path / "ner.jsonl"
    data.write_text('{"tokens": ["alice", "went"], "ner_tags": ["B-PER", "O"]}\n' * 12)
    config = {"task": "token-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": str(data)}}
    with pytest.raises(hftl.ConfigError, match="single-label classification and regression; token-classification"):
        probe(config, str(tiny_bert), output_dir=tmp_path / "p")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text("{}")
    proc = run_cli("probe", str(digits_config), "--models", str(tiny_bert), f"output_dir={run_dir}", in_process=True, check=False)
    assert proc.returncode == 2 and "holds a finished run" in proc.stderr
    with pytest.raises(hftl.ConfigError, match="--rank-by"):
        probe(digits_config, str(tiny_bert), rank_by="accuracy")


def test_logme_prefers_features_that_explain_the_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    signal = np.eye(3)[labels] + 0.3 * rng.normal(size=(300, 3))
    weak = np.eye(3)[labels] + 3.0 * rng.normal(size=(300, 3))
    noise = rng.normal(size=(300, 3))
    scores = [logme(np.c_[x, rng.normal(size=(300, 5))], labels) for x in (signal, weak, noise)]
    assert scores[0] > scores[1] > scores[2]
    targets = signal[:, 0] * 2.0 + 0.1 * rng.normal(size=300)
    assert logme(signal, targets, regression=True) > logme(noise, targets, regression=True)


def test_the_report_says_when_the_first_token_sees_less_than_the_mean():
    """A lower block that the mean of its tokens scores well but the first token alone does not: a head that reads
    the first token would not find it, and the report says so (MiniLM's case, README)."""
    from hftl.studies.probe import BlockScore, ModelProbe, ProbeResult
    from hftl.studies.probe_report import advise

    blocks = [BlockScore(1, 0.70, -1.0, 0.1, 0.70), BlockScore(2, 0.89, -0.5, 0.1, 0.55), BlockScore(3, 0.80, -0.6, 0.1, 0.80)]
    result = ProbeResult(Path("."), "text-classification", "f1", "logme", [ModelProbe("m", "c", blocks, 1.0, False, 2)], ["c"])
    caution = [line for line in advise(result) if "first token alone" in line]
    assert len(caution) == 1 and caution[0].startswith(
        "m: at block 2 the first token alone scores 0.5500 against the mean's 0.8900"
    )
    assert "strategy.keep_blocks=2 leaves it that little to work with" in caution[0]
    blocks[1].first_token = 0.87  # within 5 points of the mean: nothing to say
    assert not [line for line in advise(result) if "first token alone" in line]
