"""Text on the shared core: every strategy through the CLI on a tiny BERT, pairs, token classification,
sub-word label alignment, dynamic padding and length grouping, and the exported pipelines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.utils import set_seed

from hftl.config import load_config
from hftl.data.metrics import IGNORE
from hftl.data.modalities import get_modality
from hftl.data.modalities.text import align_labels
from hftl.data.sampling import EpochSampler
from hftl.data.sources import load_splits
from hftl.models.loading import setup_model
from hftl.run_folder.layout import load_run
from hftl.runs.finetune import setup_data
from tests.conftest import run_cli
from tests.text_data import sentiment_rows, tagging_rows, validation_rows, write_csv, write_jsonl

STRATEGIES = {
    "head_only": ["strategy.name=head_only"],
    "freeze": ["strategy.name=freeze", "strategy.trainable_blocks=1"],
    "full": ["strategy.name=full"],
    "lora": ["strategy.name=lora"],
    "scratch": ["strategy.name=scratch"],
    "hybrid": ["strategy.name=full", "strategy.head_warmup_epochs=1", "train.layer_lr_decay=0.8"],
}


def write_config(tmp_path: Path, model_dir: Path, train: Path, task: str = "text-classification", **train_keys) -> Path:
    config = {
        "task": task,
        "model": {"name_or_path": str(model_dir)},
        "data": {"train": str(train), "validation_split": 0.25},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "learning_rate": 2e-3,
            "report_to": "none",
            "logging_steps": 1,
            "load_best_at_end": False,
            **train_keys,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def initial_state(run_dir: Path, labels: list[str]) -> tuple[dict[str, torch.Tensor], object]:
    """The model exactly as the run started (same seed, same code path), merged if LoRA."""
    cfg, _ = load_run(run_dir)
    set_seed(cfg.train.seed)
    model, _, layer_map, _ = setup_model(cfg, get_modality(cfg.task, cfg), labels)
    if hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    return {k: v.clone() for k, v in model.state_dict().items()}, layer_map


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("reviews") / "reviews.csv", sentiment_rows(80))


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_text_strategy_trains_through_cli_and_changes_exactly_its_parts(strategy, tiny_bert, reviews, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_bert, reviews)
    proc = run_cli("train", str(config), f"output_dir={run_dir}", *STRATEGIES[strategy], in_process=True)
    assert "what trains" in proc.stdout
    assert (run_dir / "model" / "tokenizer.json").is_file()  # the tokenizer travels with the model

    init, layer_map = initial_state(run_dir, ["neg", "pos"])
    final = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").state_dict()
    assert set(final) <= set(init)
    changed = {layer_map.part_of(k) for k in final if not torch.equal(final[k], init[k])}
    if strategy == "head_only":
        assert changed == {"head"}  # embeddings, every encoder layer and the pooler bit-identical
    elif strategy == "freeze":
        assert changed == {"head", "neck", "block.1"}
    elif strategy == "lora":
        adapted = {k for k in final if not torch.equal(final[k], init[k]) and layer_map.part_of(k) != "head"}
        assert adapted and all(k.endswith(("query.weight", "value.weight")) for k in adapted)
    else:
        assert changed == set(layer_map.parts)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["labels"] == ["neg", "pos"] and len(metrics["history"]) == 2
    if strategy == "hybrid":
        assert [h["phase"] for h in metrics["history"]] == ["head_warmup", "full"]
    classify = pipeline("text-classification", model=str(run_dir / "model"))
    assert {p["label"] for p in classify("the film was good", top_k=2)} == {"neg", "pos"}


def test_full_fine_tuning_learns_and_predicts_through_the_cli(tiny_bert, reviews, tmp_path):
    """The run learns; `hftl evaluate` on a csv of exactly the run's validation examples gives the run's own
    validation metrics (model/ is the best epoch's); `hftl predict` gives the softmax of a plain forward pass."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_bert, reviews, epochs=8, batch_size=8, warmup_ratio=0.1, load_best_at_end=True)
    run_cli("train", str(config), f"output_dir={run_dir}", "strategy=full", "data.group_by_length=true", in_process=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.8, metrics["history"]  # chance is 0.5
    for png in ("learning_curves.png", "confusion_matrix.png"):  # every run draws its own curves
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = ["a very good film", "the plot was awful", "it is"]
    out = json.loads(run_cli("predict", str(run_dir), *texts, "--json", "--top-k", "2", in_process=True).stdout)
    assert [o["predictions"][0]["label"] for o in out[:2]] == ["pos", "neg"]
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    with torch.no_grad():
        probabilities = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    assert [o["input"] for o in out] == texts
    for item, probs in zip(out, probabilities):
        top = probs.topk(2)
        assert [p["label"] for p in item["predictions"]] == [["neg", "pos"][i] for i in top.indices.tolist()]
        assert [p["score"] for p in item["predictions"]] == pytest.approx(top.values.tolist(), abs=1e-5)

    proc = run_cli("evaluate", str(run_dir), "--data", str(reviews), in_process=True)
    assert json.loads(proc.stdout)["accuracy"] >= 0.8
    # Exactly the validation examples, rebuilt from the run's config.yaml: the run's own numbers again.
    rows, names = validation_rows(run_dir), metrics["data"]["labels"]
    assert len(rows) == metrics["data"]["validation_examples"] == 20
    evaluated = json.loads(
        run_cli("evaluate", str(run_dir), "--data", str(write_csv(tmp_path / "v.csv", rows)), in_process=True).stdout
    )
    assert evaluated["examples"] == 20
    for key in ("accuracy", "f1", "precision", "recall"):
        assert evaluated[key] == metrics["validation"][key], key
    assert evaluated["loss"] == pytest.approx(metrics["validation"]["loss"], rel=1e-5)
    # The same examples, reversed and with the labels swapped: 1 - accuracy.
    swapped = [{**r, "label": names[1 - names.index(r["label"])]} for r in rows[::-1]]
    evaluated = json.loads(
        run_cli("evaluate", str(run_dir), "--data", str(write_csv(tmp_path / "s.csv", swapped)), in_process=True).stdout
    )
    assert evaluated["accuracy"] == pytest.approx(1 - metrics["validation"]["accuracy"])


def test_text_pairs(tiny_bert, tmp_path):
    from transformers import pipeline

    # Label: do both texts carry the same sentiment? Needs both halves of the pair.
    rows, second = [], sentiment_rows(96, seed=2)
    random.Random(0).shuffle(second)
    for i, (a, b) in enumerate(zip(sentiment_rows(96, seed=1), second)):
        rows.append({"premise": a["text"], "hypothesis": b["text"], "label": int(a["label"] == b["label"]), "id": i})
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    run_dir = tmp_path / "run"
    overrides = ["data.text_column=premise", "data.text_pair_column=hypothesis", "strategy=full", "max_length=24"]
    run_cli("train", str(write_config(tmp_path, tiny_bert, data)), f"output_dir={run_dir}", *overrides, in_process=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["data"]["labels"] == ["0", "1"] and metrics["data"]["train_examples"] == 72
    classify = pipeline("text-classification", model=str(run_dir / "model"))
    assert classify({"text": "good film", "text_pair": "bad film"})["label"] in ("0", "1")

    # What the model is fed: [CLS] premise [SEP] hypothesis [SEP], the hypothesis as segment B.
    cfg, _ = load_run(run_dir)
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, cfg.train.seed)
    tokenizer = modality.load_processor(str(run_dir / "model"), None, False)
    data = setup_data(cfg, modality, tokenizer, splits)
    premise, hypothesis = splits.train[0]["premise"], splits.train[0]["hypothesis"]
    batch = data.collate(data.train.__getitems__([0]))
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    first = tokenizer.tokenize(premise)
    assert tokens == ["[CLS]", *first, "[SEP]", *tokenizer.tokenize(hypothesis), "[SEP]"]
    assert batch["token_type_ids"][0].tolist() == [0] * (len(first) + 2) + [1] * (len(tokens) - len(first) - 2)


def test_collator_pads_per_batch_and_truncates(tiny_bert):
    raw = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": "x"}}
    cfg = load_config(raw, {"max_length": 6})
    modality = get_modality(cfg.task, cfg)
    tokenizer = modality.load_processor(str(tiny_bert), None, False)
    collate = modality.collator(tokenizer)
    short = collate([{"input": "good", "labels": 1}, {"input": "the film", "labels": 0}])
    assert short["input_ids"].shape == (2, 4)  # [CLS] the film [SEP]: the longest of the batch, not max_length
    assert short["attention_mask"][0].tolist() == [1, 1, 1, 0]
    long = collate([{"input": "the film was very very good and it was nice", "labels": 1}])
    assert long["input_ids"].shape == (1, 6)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_splits_tokenized_once_give_the_batches_per_batch_tokenizing_gives(tiny_bert, padding_side):
    """`encode` (once per split, before training) + padding in the collator == the tokenizer padding each batch."""
    import datasets

    from hftl.data.sources import ExampleDataset

    raw = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": "x"}}
    modality = get_modality("text-classification", load_config(raw, {"max_length": 7}))
    tokenizer = modality.load_processor(str(tiny_bert), None, False)
    tokenizer.padding_side = padding_side
    collate = modality.collator(tokenizer)
    texts = ["good", "the film was very very good and it was nice", "bad film", "an awful , awful plot"]
    for inputs in (texts, [[a, b] for a, b in zip(texts, reversed(texts))]):  # single texts, then pairs
        ds = datasets.Dataset.from_dict({"text": inputs, "labels": [0, 1, 0, 1], "other": [1, 2, 3, 4]})
        encoded, column = modality.encode(ds, "text", tokenizer)
        examples = ExampleDataset(encoded, column, modality.loader(tokenizer)).__getitems__([3, 0, 1])
        assert isinstance(examples[0]["input"], dict)
        once = collate(examples)
        per_batch = collate([{"input": inputs[i], "labels": [0, 1, 0, 1][i]} for i in (3, 0, 1)])
        assert once.keys() == per_batch.keys() >= {"input_ids", "attention_mask", "token_type_ids", "labels"}
        for key in once:
            assert torch.equal(once[key], per_batch[key]), key
        assert once["input_ids"].shape == (3, 7)  # truncated to max_length, padded to the batch
        every = collate(ExampleDataset(encoded, column, modality.loader(tokenizer)).__getitems__([0, 1, 2, 3]))
        assert modality.lengths(encoded, column, tokenizer) == every["attention_mask"].sum(1).tolist()

    tagger = get_modality("token-classification", load_config({**raw, "task": "token-classification"}))
    words = [["Alice", "visited", "Zurich"], ["new", "york"]]
    ds = datasets.Dataset.from_dict({"tokens": words, "labels": [[1, 0, 3], [3, 4]]})
    encoded, column = tagger.encode(ds, "tokens", tokenizer)
    once = tagger.collator(tokenizer)(ExampleDataset(encoded, column, tagger.loader(tokenizer)).__getitems__([0, 1]))
    per_batch = tagger.collator(tokenizer)([{"input": w, "labels": t} for w, t in zip(words, [[1, 0, 3], [3, 4]])])
    assert once.keys() == per_batch.keys()
    for key in once:
        assert torch.equal(once[key], per_batch[key]), key
    assert (once["labels"] != IGNORE).sum().item() == 5  # one label per word, whatever the padding side


def test_length_grouped_sampler_batches_similar_lengths():
    lengths = [(i * 37) % 101 for i in range(400)]
    sampler = EpochSampler(400, seed=3, lengths=lengths, batch_size=8)
    order = list(sampler)
    assert sorted(order) == list(range(400))
    batches = [order[i : i + 8] for i in range(0, 400, 8)]
    spread = sum(max(lengths[j] for j in b) - min(lengths[j] for j in b) for b in batches) / len(batches)
    assert spread < 10  # random batches of 8 spread over ~75 of the 0..100 range
    sampler.set_epoch(1)
    assert list(sampler) != order and list(EpochSampler(400, seed=3, lengths=lengths, batch_size=8)) == order


# -- token classification ---------------------------------------------------------------------------


def test_sub_word_alignment_on_a_hand_checked_example(tiny_bert):
    cfg = load_config({"task": "token-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": "x"}})
    modality = get_modality(cfg.task, cfg)
    tokenizer = modality.load_processor(str(tiny_bert), None, False)
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # "Zurich" is not in the vocabulary: z ##u ##r ##i ##c ##h, scored on "z" only.
    batch = modality.collator(tokenizer)(
        [
            {"input": ["Alice", "visited", "Zurich"], "labels": [1, 0, 3]},
            {"input": ["new", "york"], "labels": [3, 4]},
        ]
    )
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0])
    assert tokens == ["[CLS]", "alice", "visited", "z", "##u", "##r", "##i", "##c", "##h", "[SEP]"]
    assert batch["labels"][0].tolist() == [IGNORE, 1, 0, 3, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]
    assert batch["labels"][1].tolist() == [IGNORE, 3, 4, IGNORE] + [IGNORE] * 6  # padded to the batch
    assert [names[i] for i in batch["labels"][0].tolist() if i != IGNORE] == ["B-PER", "O", "B-LOC"]
    assert align_labels([None, 0, 0, 1, None], [2, 0]) == [IGNORE, 2, IGNORE, 0, IGNORE]


def test_token_classification_learns_entities_and_tags_through_the_pipeline(tiny_bert, tmp_path):
    from transformers import pipeline

    data = write_jsonl(tmp_path / "ner.jsonl", tagging_rows(120))
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_bert, data, task="token-classification", epochs=6, learning_rate=3e-3)
    run_cli("train", str(config), f"output_dir={run_dir}", "strategy=full", in_process=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["validation"]) >= {"f1", "precision", "recall", "accuracy", "loss"}
    assert metrics["validation"]["f1"] >= 0.6, metrics["history"]  # an untrained tagger scores ~0 entity F1
    assert metrics["data"]["labels"][0] == "O" and metrics["confusion_matrix"] is None

    tagger = pipeline("token-classification", model=str(run_dir / "model"), aggregation_strategy="simple")
    entities = tagger("alice visited new york")
    assert {e["entity_group"] for e in entities} <= {"PER", "LOC"} and entities
    proc = run_cli("predict", str(run_dir), "bob met carol in rome", in_process=True)
    assert "[PER]" in proc.stdout or "[LOC]" in proc.stdout


@pytest.mark.parametrize("strategy", ["head_only", "lora", "hybrid"])
def test_token_classification_strategies_and_csv_layout(strategy, tiny_bert, tmp_path):
    """Words and tags as space-separated csv cells; the strategies keep their frozen parts frozen."""
    from transformers import AutoModelForTokenClassification

    rows = [{"tokens": " ".join(r["tokens"]), "ner_tags": " ".join(r["ner_tags"])} for r in tagging_rows(40)]
    data = write_csv(tmp_path / "ner.csv", rows)
    run_dir = tmp_path / "run"
    config = write_config(tmp_path, tiny_bert, data, task="token-classification")
    run_cli("train", str(config), f"output_dir={run_dir}", *STRATEGIES[strategy], in_process=True)
    labels = ["O", "B-LOC", "B-PER", "I-LOC"]
    assert json.loads((run_dir / "metrics.json").read_text())["data"]["labels"] == labels
    init, layer_map = initial_state(run_dir, labels)
    final = AutoModelForTokenClassification.from_pretrained(run_dir / "model").state_dict()
    changed = {layer_map.part_of(k) for k in final if not torch.equal(final[k], init[k])}
    if strategy == "head_only":
        assert changed == {"head"}
    elif strategy == "lora":
        assert "embeddings" not in changed and "head" in changed
    else:
        assert changed == set(layer_map.parts) - {"neck"}  # token heads do not use the pooler


def test_texts_are_cut_to_the_models_position_table(tiny_bert, tmp_path, capsys):
    """The tokenizer was saved without model_max_length: texts longer than the 64 learned positions train cut
    to 64 (they crashed mid-run, `index out of range`); a data.max_length past the table is cut to it, with a note."""
    from hftl import finetune
    from tests.text_data import write_csv

    rows = [{"text": " ".join(["good" if i % 2 else "bad"] * 100), "label": "pos" if i % 2 else "neg"} for i in range(12)]
    data = write_csv(tmp_path / "long.csv", rows)
    base = {"task": "text-classification", "model": {"name_or_path": str(tiny_bert)}, "data": {"train": str(data)}}
    result = finetune(base, strategy="head_only", epochs=1, output_dir=str(tmp_path / "run"), train={"report_to": "none"})
    assert result.metrics
    capsys.readouterr()
    finetune(base, **{"data.max_length": 100}, epochs=1, output_dir=str(tmp_path / "long"), train={"report_to": "none"})
    assert (
        "data.max_length=100, but BertForSequenceClassification has learned positions for 64 tokens only"
        in capsys.readouterr().out
    )
