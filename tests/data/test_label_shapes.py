"""Every label shape: multi-label and regression on real digits and on text made here, class weights and the
balanced sampler on a 95/5 set, per-class metrics, and each bad input refused naming its row, column or key."""

from __future__ import annotations

import csv
import json
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hftl.config import load_config
from hftl.data.labels import LabelSpace
from hftl.data.losses import class_weight_vector, sample_weights
from hftl.data.modalities import get_modality
from hftl.data.sampling import EpochSampler
from hftl.data.sources import load_splits
from hftl.utils.errors import ConfigError, DataError
from tests.conftest import run_cli, save_tiny_bert, save_tiny_resnet
from tests.text_data import FILLER, NEGATIVE, PEOPLE, POSITIVE, write_jsonl

ATTRIBUTES = {"even": lambda d: d % 2 == 0, "at_least_5": lambda d: d >= 5, "prime": lambda d: d in (2, 3, 5, 7)}


@pytest.fixture(scope="module")
def digit_rows(tmp_path_factory) -> list[dict]:
    """Real digits, 20 per class: the image, its true attributes (several per image) and its value."""
    from hftl.builtin import write_digits_imagefolder

    root = write_digits_imagefolder(tmp_path_factory.mktemp("digits") / "all", per_class=20)
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        digit = int(folder.name)
        for image in sorted(folder.iterdir()):
            attributes = [name for name, test in ATTRIBUTES.items() if test(digit)]
            rows.append({"image": str(image), "attributes": attributes, "value": digit})
    return rows


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> Path:
    return save_tiny_resnet(tmp_path_factory.mktemp("resnet"))


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("bert"))


def text_rows(n: int, seed: int = 0) -> list[dict]:
    """Fillers plus, at random, a positive word, a negative word and a person: the labels say which are
    there, `score` is 2 per positive minus 1.5 per negative (plus noise), `words` the word count."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words, labels = rng.choices(FILLER, k=rng.randint(2, 4)), []
        for label, pool, p in (("positive", POSITIVE, 0.5), ("negative", NEGATIVE, 0.4), ("person", PEOPLE, 0.5)):
            if rng.random() < p:
                words.append(rng.choice(pool))
                labels.append(label)
        rng.shuffle(words)
        score = 2.0 * ("positive" in labels) - 1.5 * ("negative" in labels) + rng.gauss(0, 0.1)
        rows.append({"text": " ".join(words), "labels_list": labels, "score": score, "words": float(len(words))})
    return rows


def write_config(path: Path, model: Path, data_file: Path, **sections) -> Path:
    cfg = {
        "task": sections.pop("task", "text-classification"),
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data_file), "validation_split": 0.25, **sections.pop("data", {})},
        "strategy": {"name": "full", **sections.pop("strategy", {})},
        "train": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "report_to": "none", **sections.pop("train", {})},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def constant_micro_f1(references: np.ndarray) -> float:
    """The best micro F1 a predictor that ignores its input gets: every label on, or the majority of each."""
    truth = references > 0.5
    everything = 2 * truth.sum() / (truth.size + truth.sum())
    majority = truth.mean(axis=0) > 0.5
    tp = (truth & majority).sum()
    per_label = 2 * tp / (truth.sum() + majority.sum() * len(truth)) if majority.any() else 0.0
    return float(max(everything, per_label))


def validation_truth(run_dir: Path) -> np.ndarray:
    cfg = load_config(run_dir / "config.yaml")
    splits = load_splits(cfg.data, get_modality(cfg.task, cfg), cfg.train.seed)
    return np.asarray(splits.validation["labels"])


# -- multi-label ------------------------------------------------------------------------------------
def test_multi_label_digits_beat_a_constant_predictor_and_the_pipeline_gives_every_label_a_sigmoid_score(
    digit_rows, resnet, tmp_path
):
    from transformers import pipeline

    data = write_jsonl(tmp_path / "digits.jsonl", [{"image": r["image"], "attributes": r["attributes"]} for r in digit_rows])
    cfg = write_config(tmp_path / "c.yaml", resnet, data, task="image-classification", data={"label_column": "attributes"})
    run = tmp_path / "run"
    out = run_cli("train", str(cfg), f"output_dir={run}", in_process=True)
    assert "train examples per label:" in out.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["label_space"]["problem"] == "multi_label"  # detected from the list column
    assert metrics["data"]["labels"] == ["at_least_5", "even", "prime"]
    truth = validation_truth(run)
    assert metrics["validation"]["micro_f1"] > constant_micro_f1(truth) + 0.1, (metrics["validation"], constant_micro_f1(truth))
    for key in ("f1", "micro_f1", "precision", "recall", "mean_average_precision", "exact_match"):
        assert 0 <= metrics["validation"][key] <= 1
    per_label = metrics["per_class"]["validation"]
    assert set(per_label) == set(ATTRIBUTES) and all(
        {"precision", "recall", "f1", "support"} <= set(v) for v in per_label.values()
    )
    assert sum(v["support"] for v in per_label.values()) == int(truth.sum())

    config = json.loads((run / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["decision_threshold"] == metrics["decision_threshold"]
    pipe = pipeline("image-classification", model=str(run / "model"))
    outputs = pipe(digit_rows[0]["image"], top_k=None)
    assert sorted(o["label"] for o in outputs) == sorted(ATTRIBUTES)
    scores = [o["score"] for o in outputs]
    assert all(0 < s < 1 for s in scores) and abs(sum(scores) - 1) > 1e-3  # sigmoid per label, not a softmax
    assert (run / "plots" / "precision_recall.png").stat().st_size > 0
    card = (run / "README.md").read_text()
    assert "Per label (the best weights):" in card and "| validation | even |" in card and "micro_f1" in card

    # hftl evaluate reads the run's threshold: on the validation examples it reproduces the run's metrics.
    val_rows = [r for r in digit_rows if r["image"] in set(validation_images(run))]
    val = write_jsonl(tmp_path / "val.jsonl", [{"image": r["image"], "attributes": r["attributes"]} for r in val_rows])
    again = json.loads(run_cli("evaluate", str(run), "--data", str(val), in_process=True).stdout)
    assert again["micro_f1"] == pytest.approx(metrics["validation"]["micro_f1"], abs=1e-6)


def validation_images(run: Path) -> list[str]:
    cfg = load_config(run / "config.yaml")
    splits = load_splits(cfg.data, get_modality(cfg.task, cfg), cfg.train.seed)
    return list(splits.validation["image"])


def test_multi_label_text_from_csv_cells_joined_by_the_separator_and_on_cached_features(bert, tmp_path):
    rows = text_rows(240)
    data = tmp_path / "texts.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "tags"])
        writer.writerows([r["text"], ";".join(r["labels_list"])] for r in rows)  # some cells empty: no label
    assert any(not r["labels_list"] for r in rows)
    cfg = write_config(
        tmp_path / "c.yaml", bert, data, data={"label_column": "tags", "problem": "multi_label", "label_separator": ";"},
        train={"epochs": 6, "learning_rate": 5e-3},
    )  # fmt: skip
    run = tmp_path / "run"
    run_cli("train", str(cfg), f"output_dir={run}", in_process=True)
    metrics = json.loads((run / "metrics.json").read_text())
    truth = validation_truth(run)
    assert metrics["data"]["labels"] == ["negative", "person", "positive"]
    assert metrics["validation"]["micro_f1"] > constant_micro_f1(truth) + 0.05, metrics["validation"]
    out = run_cli("predict", str(run), "alice saw a good film", in_process=True).stdout
    assert out.count("[yes]") + out.count("[no]") == 3  # every label, each marked against the run's threshold

    # head_only on cached features: float multi-hot labels go through the feature cache as they are.
    cached = tmp_path / "cached"
    run_cli("train", str(cfg), f"output_dir={cached}", "strategy.name=head_only", "train.feature_cache=on", in_process=True)
    assert json.loads((cached / "metrics.json").read_text())["feature_cache"]["train"]


# -- regression -------------------------------------------------------------------------------------
def test_regression_of_the_digit_value_beats_the_mean_and_the_pipeline_predicts_in_the_data_units(digit_rows, resnet, tmp_path):
    from transformers import pipeline

    data = write_jsonl(tmp_path / "digits.jsonl", [{"image": r["image"], "value": r["value"]} for r in digit_rows])
    cfg = write_config(
        tmp_path / "c.yaml", resnet, data, task="image-classification",
        data={"label_column": "value", "problem": "regression"}, train={"epochs": 8, "learning_rate": 5e-3},
    )  # fmt: skip
    run = tmp_path / "run"
    run_cli("train", str(cfg), f"output_dir={run}", in_process=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["r2"] > 0.3, metrics["validation"]  # predicting the mean scores 0
    assert set(metrics["validation"]) == {"rmse", "mae", "r2", "pearson", "spearman", "loss"}
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "value"}

    # The exported head predicts digit values itself (scaling folded in): plain pipeline outputs score as well.
    images = validation_images(run)
    value_of = {r["image"]: r["value"] for r in digit_rows}
    pipe = pipeline("image-classification", model=str(run / "model"))
    predicted = np.asarray([out[0]["score"] for out in pipe(images, top_k=None)])
    true = np.asarray([value_of[i] for i in images], dtype=float)
    rmse = float(np.sqrt(np.mean((predicted - true) ** 2)))
    assert rmse == pytest.approx(metrics["validation"]["rmse"], rel=1e-3)
    assert (run / "plots" / "predicted_vs_true.png").stat().st_size > 0


def test_regression_of_two_text_targets_with_lora_and_the_study_report(bert, tmp_path):
    rows = text_rows(240)
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": r["text"], "score": r["score"], "words": r["words"]} for r in rows])
    cfg = write_config(
        tmp_path / "c.yaml", bert, data, data={"label_column": ["score", "words"], "problem": "regression"},
        train={"epochs": 6, "learning_rate": 5e-3},
    )  # fmt: skip
    run = tmp_path / "run"
    run_cli("train", str(cfg), f"output_dir={run}", in_process=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["labels"] == ["score", "words"]
    assert set(metrics["per_class"]["validation"]) == {"score", "words"}
    assert metrics["validation"]["r2"] > 0.3, metrics["per_class"]["validation"]

    # LoRA: the scaling folds into the trained copy of the head (peft's modules_to_save) before the merge, so
    # `hftl evaluate` of model/ on the validation rows gives the run's own validation numbers.
    lora = tmp_path / "lora"
    run_cli("train", str(cfg), f"output_dir={lora}", "strategy.name=lora", "epochs=1", in_process=True)
    cfg_run = load_config(lora / "config.yaml")
    validation = load_splits(cfg_run.data, get_modality(cfg_run.task, cfg_run), cfg_run.train.seed).validation
    val = write_jsonl(
        tmp_path / "val.jsonl",
        [{"text": t, "score": y[0], "words": y[1]} for t, y in zip(validation["text"], validation["labels"])],
    )
    again = json.loads(run_cli("evaluate", str(lora), "--data", str(val), in_process=True).stdout)
    expected = json.loads((lora / "metrics.json").read_text())["validation"]
    assert again["rmse"] == pytest.approx(expected["rmse"], rel=1e-4) and again["r2"] == pytest.approx(expected["r2"], abs=1e-4)
    out = run_cli("predict", str(run), "good film", "--json", in_process=True).stdout
    values = {p["label"]: p["value"] for p in json.loads(out)[0]["predictions"]}
    assert set(values) == {"score", "words"} and 0.5 < values["words"] < 6  # in words, not standard deviations
    refused = run_cli("predict", str(run), "good film", "--top-k", "1", in_process=True, check=False)
    assert refused.returncode != 0 and "--top-k" in refused.stderr

    study = tmp_path / "study"
    run_cli("compare", str(cfg), f"output_dir={study}", "--strategies", "head_only,full", "epochs=1", in_process=True)
    report = (study / "report.md").read_text()
    assert "val rmse" in report and "val r2" in report and "val f1" not in report
    assert "| validation | words |" in report  # the best run's per-target table


# -- imbalance --------------------------------------------------------------------------------------
def imbalanced_rows(n: int, minority: float = 0.05, seed: int = 0) -> list[dict]:
    """Binary sentiment, 95/5: `rare` texts hold a negative word, `common` a positive one."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "rare" if i < n * minority else "common"
        words = rng.choices(FILLER, k=3) + [rng.choice(NEGATIVE if label == "rare" else POSITIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def test_balanced_class_weights_raise_the_minority_recall_at_the_same_budget(tmp_path):
    """95/5: 10 zeros against 190 ones and sevens (real digits); validation 40 of each, so recall is measured finely."""
    from hftl.builtin import write_digits_imagefolder

    root = write_digits_imagefolder(tmp_path / "digits")
    zeros, ones, sevens = (sorted((root / d).iterdir()) for d in ("0", "1", "7"))
    train = [{"image": str(p), "label": "zero"} for p in zeros[:10]]
    train += [{"image": str(p), "label": "one"} for p in (ones[:-40] + sevens)[:190]]
    val = [{"image": str(p), "label": "zero"} for p in zeros[-40:]] + [{"image": str(p), "label": "one"} for p in ones[-40:]]
    torch.manual_seed(0)  # the tiny ResNet's random weights, the same every run
    model = save_tiny_resnet(tmp_path / "resnet")
    recall = {}
    for weights in ("none", "balanced"):
        cfg = write_config(
            tmp_path / f"{weights}.yaml", model, write_jsonl(tmp_path / "train.jsonl", train), task="image-classification",
            data={"validation": str(write_jsonl(tmp_path / "val.jsonl", val))},
            train={"epochs": 2, "class_weights": weights},
        )  # fmt: skip
        run = tmp_path / weights
        out = run_cli("train", str(cfg), f"output_dir={run}", in_process=True).stdout
        assert "train examples per class: one: 190, zero: 10" in out
        assert "1 class(es) with fewer than 10" not in out  # 10 is enough not to warn
        recall[weights] = json.loads((run / "metrics.json").read_text())["per_class"]["validation"]["zero"]["recall"]
        card = (run / "README.md").read_text()  # single-label runs get the per-class table too
        assert "Per class (the best weights):" in card and "| validation | zero |" in card
    assert recall["balanced"] > recall["none"] + 0.1, recall


def test_balanced_sampler_draws_every_class_equally_as_a_function_of_seed_and_epoch():
    space = LabelSpace("single_label", ["common", "rare"])
    labels = [0] * 95 + [1] * 5
    sampler = EpochSampler(100, seed=3, weights=sample_weights(space, labels))
    drawn = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        drawn += list(sampler)
    assert 0.4 < np.mean([labels[i] for i in drawn]) < 0.6  # the 5% class makes about half of every epoch
    sampler.set_epoch(4)
    again = EpochSampler(100, seed=3, weights=sample_weights(space, labels))
    again.set_epoch(4)
    assert list(sampler) == list(again) and list(sampler) != drawn[:100]

    counts = LabelSpace("single_label", ["common", "rare"], counts=[95, 5]).describe_counts()
    assert counts.startswith("train examples per class: common: 95, rare: 5")
    assert "warning: 1 class(es) with fewer than 10 training examples (rare)" in counts

    multi = LabelSpace("multi_label", ["a", "b"])
    w = sample_weights(multi, [[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 2 + [[0.0, 0.0]] * 2)
    assert w[9] == pytest.approx(0.5) and w[0] == pytest.approx(1 / 8) and w[-1] == pytest.approx(0.5)


def test_balanced_sampler_resumes_after_sigkill_to_the_uninterrupted_weights(bert, tmp_path):
    data = write_jsonl(tmp_path / "imbalanced.jsonl", imbalanced_rows(120))
    cfg = write_config(
        tmp_path / "c.yaml", bert, data, data={"sampler": "balanced"},
        train={"epochs": 2, "batch_size": 8, "save_steps": 3, "label_smoothing": 0.1},
    )  # fmt: skip
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run_cli("train", str(cfg), f"output_dir={reference}")
    first = run_cli("train", str(cfg), f"output_dir={crashed}", env={"HFTL_FAULT_KILL_AFTER_STEP": "7"}, check=False)
    assert first.returncode == -signal.SIGKILL
    run_cli("train", str(cfg), f"output_dir={crashed}", "resume=true")
    from safetensors.torch import load_file

    expected = load_file(reference / "model" / "model.safetensors")
    got = load_file(crashed / "model" / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


# -- bad input ----------------------------------------------------------------------------------------
def splits_of(tmp_path: Path, rows: list[dict], validation: list[dict] | None = None, **data) -> object:
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    keys = {"train": str(train), **data}
    if validation is not None:
        keys["validation"] = str(write_jsonl(tmp_path / "validation.jsonl", validation))
    cfg = load_config({"task": "text-classification", "model": {"name_or_path": "m"}, "data": keys})
    return load_splits(cfg.data, get_modality(cfg.task, cfg), seed=0)


ROWS = [{"text": f"t {i}", "label": ["a"] if i % 2 else ["a", "b"], "y": float(i)} for i in range(8)]


@pytest.mark.parametrize(
    "rows,validation,data,expected",
    [
        (ROWS, [{"text": "x", "label": ["a", "zebra"], "y": 1.0}], {}, "row 1 of the validation split has label 'zebra'"),
        ([{**r, "y": float("nan") if i == 3 else r["y"]} for i, r in enumerate(ROWS)], None,
         {"problem": "regression", "label_column": "y"}, "row 4 of the train split has nan in target column 'y'"),
        ([{**r, "y": "high" if i == 5 else str(r["y"])} for i, r in enumerate(ROWS)], None,
         {"problem": "regression", "label_column": "y"}, "row 6 of the train split has 'high' in target column 'y'"),
        ([{"text": "x", "label": "a|b" if i == 2 else "a"} for i in range(6)], None, {}, "row 3 column 'label' holds 'a|b'"),
        (ROWS, None, {"problem": "single_label"}, "holds lists of labels, but data.problem=single_label"),
        ([{"text": "x", "label": []} for _ in range(6)], None, {}, "no training example has any label"),
        ([{"text": "x", "label": "ab"[i % 2]} for i in range(6)], [{"text": "x", "label": ["a"]}], {},
         "the model is single-label"),
        ([{**r, "y": 1.0} for r in ROWS], None, {"problem": "regression", "label_column": "y"}, "the same 'y' target"),
    ],
    ids=["unknown-label", "nan-target", "text-target", "joined-cell-single", "list-in-single", "empty-vocabulary",
         "list-in-single-validation", "constant-target"],
)  # fmt: skip
def test_bad_labels_are_refused_naming_row_column_and_fix(tmp_path, rows, validation, data, expected):
    with pytest.raises(DataError) as error:
        splits_of(tmp_path, rows, validation, **data)
    assert expected in str(error.value)


def test_bad_label_options_are_refused_naming_the_key():
    base = {"task": "text-classification", "model": {"name_or_path": "m"}, "data": {"train": "t"}}
    regression = {"train": "t", "problem": "regression"}
    cases = [
        ({"data": regression, "train": {"class_weights": "balanced"}}, "train.class_weights applies to classes"),
        ({"data": {"train": "t", "label_column": ["a", "b"]}}, "only regression takes"),
        ({"task": "token-classification", "data": {"train": "t", "problem": "multi_label"}}, "data.problem=multi_label is for"),
        ({"train": {"decision_threshold": 1.5}}, "train.decision_threshold must be in (0, 1)"),
        ({"train": {"class_weights": "inverse"}}, "train.class_weights must be none, balanced or a mapping"),
        ({"data": regression, "train": {"metric_for_best": "f1"}}, "not a text-classification regression metric"),
    ]  # fmt: skip
    for override, expected in cases:
        with pytest.raises(ConfigError) as error:
            load_config({**base, **override})
        assert expected in str(error.value), (override, str(error.value))
    space = LabelSpace("single_label", ["neg", "pos"], counts=[90, 10])
    with pytest.raises(ConfigError, match="'zebra', which the training data has no label of"):
        class_weight_vector(space, {"zebra": 2.0})
    assert class_weight_vector(space, {"pos": 3.0}) == [1.0, 3.0]
    assert class_weight_vector(LabelSpace("multi_label", ["a"], counts=[20], examples=100), "balanced") == [4.0]
    # On the command line a mapping is written as YAML.
    assert load_config(base, ["train.class_weights={pos: 3, neg: 1}"]).train.class_weights == {"pos": 3.0, "neg": 1.0}


def test_regression_with_a_bias_free_head_scales_without_centring_and_says_so(tmp_path):
    """GPT-2's `score` layer has no bias: the targets' mean cannot be folded in, so it is not subtracted either."""
    from transformers import pipeline

    from tests.tiny_models import save_tiny

    model = save_tiny("text-classification", "gpt2", tmp_path / "gpt2")
    rows = text_rows(120)
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": r["text"], "words": r["words"] + 10} for r in rows])
    cfg = write_config(tmp_path / "c.yaml", model, data, data={"label_column": "words", "problem": "regression"})
    run = tmp_path / "run"
    out = run_cli("train", str(cfg), f"output_dir={run}", "epochs=1", in_process=True).stdout
    assert "has no bias, so the targets are scaled by their spread but not centred" in out
    space = json.loads((run / "metrics.json").read_text())["data"]["label_space"]
    assert space["mean"] == [0.0] and space["std"][0] > 0
    validation = json.loads((run / "metrics.json").read_text())["validation"]
    value = pipeline("text-classification", model=str(run / "model"))("good film", top_k=None)[0]["score"]
    cfg_run = load_config(run / "config.yaml")
    texts = load_splits(cfg_run.data, get_modality(cfg_run.task, cfg_run), cfg_run.train.seed).validation
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": t, "words": y[0]} for t, y in zip(texts["text"], texts["labels"])])
    again = json.loads(run_cli("evaluate", str(run), "--data", str(val), in_process=True).stdout)
    assert again["rmse"] == pytest.approx(validation["rmse"], rel=1e-4)  # the saved model is the evaluated one
    assert isinstance(value, float)


def test_a_parquet_sequence_of_class_labels_is_multi_label_with_the_class_names(tmp_path):
    """A Hub-style `Sequence(ClassLabel)` column (here a parquet file keeping its features) is detected as
    multi-label and keeps the ClassLabel's names and order, even for a name no training row uses."""
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "topics": datasets.List(datasets.ClassLabel(names=["sport", "art", "war"]))}
    )
    rows = {"text": [f"t {i}" for i in range(8)], "topics": [[0], [1], [0, 1], [], [1], [0], [0, 1], [1]]}
    path = tmp_path / "topics.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    data = {"train": str(path), "label_column": "topics"}
    cfg = load_config({"task": "text-classification", "model": {"name_or_path": "m"}, "data": data})
    s = load_splits(cfg.data, get_modality(cfg.task, cfg), seed=0)
    assert s.labels.problem == "multi_label" and s.label_names == ["sport", "art", "war"]
    assert cfg.data.problem == "multi_label"  # resolved, so the run's saved config says what it trained
    assert sorted(map(tuple, list(s.train["labels"]) + list(s.validation["labels"]))) == sorted(
        tuple(float(i in r) for i in range(3)) for r in rows["topics"]
    )
