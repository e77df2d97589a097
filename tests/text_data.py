"""Small learnable text sets for the tests: word sentiment sentences and PER/LOC tagging (IOB2)."""

from __future__ import annotations

import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull"]
FILLER = ["the", "a", "film", "movie", "was", "is", "and", "very", "it", "plot"]
PEOPLE = ["alice", "bob", "carol", "dave"]
PLACES = [["paris"], ["rome"], ["berlin"], ["new", "york"]]
VERBS = ["visited", "met", "likes", "saw"]


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """`text` of fillers with one sentiment word; `label` is 'pos' or 'neg' (balanced)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.choices(FILLER, k=rng.randint(2, 6))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "pos" else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def tagging_rows(n: int, seed: int = 0) -> list[dict]:
    """CoNLL-style `tokens` / `ner_tags` (IOB2 strings): people are PER, cities (one or two words) LOC."""
    rng = random.Random(seed)

    def person() -> list[tuple[str, str]]:
        return [(rng.choice(PEOPLE), "B-PER")]

    def place() -> list[tuple[str, str]]:
        words = rng.choice(PLACES)
        return [(w, "B-LOC" if i == 0 else "I-LOC") for i, w in enumerate(words)]

    def word(options: list[str]) -> list[tuple[str, str]]:
        return [(rng.choice(options), "O")]

    rows = []
    for _ in range(n):
        pattern = rng.randrange(3)
        if pattern == 0:
            parts = person() + word(VERBS) + place()
        elif pattern == 1:
            parts = person() + word(VERBS) + person() + word(["in", "from"]) + place()
        else:
            parts = word(["the", "a"]) + word(FILLER) + word(["in", "from"]) + place() + word(VERBS) + person()
        rows.append({"tokens": [w for w, _ in parts], "ner_tags": [t for _, t in parts]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def validation_rows(run_dir: Path) -> list[dict]:
    """A text-classification run's validation examples (`text`, label name), in order, rebuilt from its own
    config.yaml the way `load_splits` made them for the run."""
    from hftl.data.modalities import get_modality
    from hftl.data.sources import load_splits
    from hftl.run_folder.layout import saved_config

    cfg = saved_config(run_dir)
    splits = load_splits(cfg.data, get_modality(cfg.task, cfg), cfg.train.seed)
    texts, labels = splits.validation[splits.input_column], splits.validation["labels"]
    return [{"text": text, "label": splits.label_names[y]} for text, y in zip(texts, labels)]
