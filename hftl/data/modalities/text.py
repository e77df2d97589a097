"""Text: sequence classification (single texts or pairs) and token classification (NER), BERT family.

Each split is tokenized once, before training, with the checkpoint's own tokenizer (truncation to
`data.max_length`); the collator only pads each batch to its longest text (dynamic padding), so
epochs after the first do no tokenizing. For token classification each word's label goes to its
first sub-token; the other sub-tokens and the special tokens get -100, so neither the loss nor the
metrics see them.

Example:
    >>> align_labels([None, 0, 1, 1, 2, None], [3, 0, 5])
    [-100, 3, 0, -100, 5, -100]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import datasets
import torch

from hftl.data.labels import SINGLE, LabelSpace, as_space
from hftl.data.metrics import IGNORE, Evaluator, TokenClassificationEvaluator
from hftl.data.modalities.base import Modality, check_model_path
from hftl.data.sources import DataReport, column_values, label_tensor, source_rows
from hftl.utils.errors import DataError, HftlError

TEXT_CANDIDATES = ("text", "sentence", "review", "content", "document", "comment", "sentence1", "question", "premise")
TOKEN_CANDIDATES = ("tokens", "words")
TAG_CANDIDATES = ("ner_tags", "tags", "labels", "label")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
_MAX_AUTO_LENGTH = 512  # tokenizers without a limit report a huge model_max_length
ENCODED = "__hftl_tokens__"  # the column holding each example's token ids once a split is tokenized
_WORD_LABELS = "word_labels"  # token classification: sub-token labels, inside the encoded example


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """Sub-token labels: a word's label on its first sub-token, IGNORE on the rest and on special tokens."""
    aligned, previous = [], None
    for word in word_ids:
        aligned.append(IGNORE if word is None or word == previous else word_labels[word])
        previous = word
    return aligned


def pad_batch(encoded: list[dict[str, list[int]]], tokenizer: Any, pad_values: dict[str, int] | None = None) -> dict:
    """Token-id lists padded to the batch's longest, as `tokenizer(texts, padding=True)` pads them.

    Plain lists padded in Python and turned into one tensor per key: `tokenizer.pad` costs 5-10x more
    for a batch of short texts.

    Example:
        >>> pad_batch([{"input_ids": [101, 7, 102]}, {"input_ids": [101, 102]}], tokenizer)["input_ids"]  # doctest: +SKIP
        tensor([[101,   7, 102],
                [101, 102,   0]])
    """
    values = {
        "input_ids": tokenizer.pad_token_id,
        "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
        "attention_mask": 0,
        "special_tokens_mask": 1,
        **(pad_values or {}),
    }
    width = max(len(e["input_ids"]) for e in encoded)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    batch = {}
    for key in encoded[0]:
        pad = values.get(key, 0)
        rows = [e[key] for e in encoded]
        padded = [[pad] * (width - len(r)) + r for r in rows] if left else [r + [pad] * (width - len(r)) for r in rows]
        batch[key] = torch.tensor(padded, dtype=torch.long)
    return batch


def _rows(encoding: Any, n: int) -> list[dict[str, list[int]]]:
    """A batch encoding's lists, one dict per example."""
    keys = list(encoding.keys())
    return [{k: encoding[k][i] for k in keys} for i in range(n)]


def load_tokenizer(name_or_path: str, revision: str | None, trust_remote_code: bool, **kwargs: Any) -> Any:
    """The checkpoint's tokenizer, or an error saying how to save one next to the weights."""
    from transformers import AutoTokenizer

    local = check_model_path(name_or_path, "bert-base-uncased")
    problem = None
    # Only a hint: byte- and character-level tokenizers (CANINE, Perceiver) need no vocabulary file.
    no_files = local.is_dir() and not any((local / name).is_file() for name in TOKENIZER_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as e:
        tokenizer, problem = None, str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    # transformers 5 builds an empty-vocabulary tokenizer from a bare config instead of failing.
    if tokenizer is not None and not isinstance(tokenizer, bool) and len(tokenizer) <= len(tokenizer.all_special_tokens) + 1:
        problem = f"its vocabulary holds only {len(tokenizer)} tokens"
        problem += f"; none of {', '.join(TOKENIZER_FILES)} in the folder" if no_files else ""
    if problem or tokenizer is None or isinstance(tokenizer, bool):
        raise HftlError(
            f"model.name_or_path={name_or_path} has no tokenizer{f' ({problem})' if problem else ''}. "
            "Save the tokenizer of its base model next to the weights: "
            "AutoTokenizer.from_pretrained(<base>).save_pretrained(<dir>)"
        )
    return tokenizer


def _max_length(tokenizer: Any, configured: int | None, positions: int | None = None) -> int:
    limit = getattr(tokenizer, "model_max_length", None) or _MAX_AUTO_LENGTH
    return configured or min(int(limit), _MAX_AUTO_LENGTH, positions or _MAX_AUTO_LENGTH)


def position_limit(model: Any) -> int | None:
    """The longest sequence the model's learned position table holds, or None when it has none (rotary, relative).

    A tokenizer saved without `model_max_length` reports no limit, so a long text would index past the table
    mid-run. RoBERTa-style tables start after the padding index (514 rows hold 512 positions).

    Example:
        >>> position_limit(BertForSequenceClassification(BertConfig(max_position_embeddings=128)))   # doctest: +SKIP
        128
    """
    from torch import nn

    try:
        words = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # CANINE hashes characters: no one table of input embeddings
        return None
    for module in model.modules():  # the table beside the word embeddings: never a vision tower's
        table = getattr(module, "position_embeddings", None)
        if isinstance(table, nn.Embedding) and any(child is words for child in module.children()):
            offset = table.padding_idx + 1 if table.padding_idx is not None else 0
            return table.num_embeddings - offset
    return None


def _kind(value: Any) -> str:
    return "empty cell" if value is None else type(value).__name__


def _check_word_alignment(tokenizer: Any, name_or_path: str) -> None:
    """Word labels reach sub-tokens through `word_ids()`; a tokenizer that cannot say which word a token came
    from (LUKE's, which labels entity spans instead) would train on no label at all: refuse it."""
    try:
        words = tokenizer([["alpha", "beta"]], is_split_into_words=True).word_ids(0)
    except (ValueError, TypeError, AttributeError):
        words = []
    if not {0, 1} <= set(words):
        raise HftlError(
            f"token classification needs a tokenizer that maps each token to its word (word_ids), and the "
            f"{type(tokenizer).__name__} of {name_or_path} does not; use a checkpoint with a fast, word-aware tokenizer "
            "(tokenizer.json), or a sequence task"
        )


class _TextBase(Modality):
    """What both text tasks share: tokenizer loading, pad token, input-column checks."""

    input_candidates: tuple[str, ...] = TEXT_CANDIDATES

    def load_processor(
        self, name_or_path: str, revision: str | None, trust_remote_code: bool, label_names: list[str] | None = None
    ) -> Any:
        tokenizer = load_tokenizer(name_or_path, revision, trust_remote_code)
        if tokenizer.pad_token is None:  # GPT-style tokenizers: batches need a pad token
            if tokenizer.eos_token is None:
                raise HftlError(f"the tokenizer of {name_or_path} has neither a pad nor an eos token to pad batches with")
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def model_kwargs(self, labels: LabelSpace | list[str], processor: Any) -> dict[str, Any]:
        return {**super().model_kwargs(labels, processor), "pad_token_id": processor.pad_token_id}

    def detect_input_column(self, ds: datasets.Dataset, where: str) -> str:
        for name in self.input_candidates:
            if name in ds.column_names:
                return name
        flavour = "tokens_column" if self.task == "token-classification" else "text_column"
        raise DataError(
            f"{where}: no {'tokens' if flavour == 'tokens_column' else 'text'} column found among {ds.column_names}; "
            f"name it {self.input_candidates[0]!r} or set data.{flavour}=<name>"
        )

    def adapt_model(self, model: Any, processor: Any) -> None:
        self.fit_inputs(model)

    def fit_inputs(self, model: Any) -> None:
        """Texts are cut to the model's position table too (`position_limit`); a data.max_length past it is cut to
        it, and `length_note` says so (the run prints it)."""
        self.positions = position_limit(model)
        configured = self.cfg.data.max_length if self.cfg is not None else None
        if configured and self.positions and configured > self.positions:
            self.length_note = (
                f"data.max_length={configured}, but {type(model).__name__} has learned positions for {self.positions} "
                f"tokens only: texts are cut to {self.positions}"
            )

    def max_length(self, tokenizer: Any) -> int:
        positions = getattr(self, "positions", None)
        length = _max_length(tokenizer, self.cfg.data.max_length, positions)
        return min(length, positions) if positions else length

    def _encode_batch(self, batch: dict[str, list], column: str, processor: Any) -> list[dict[str, list[int]]]:
        """One `datasets.map` batch's examples as unpadded token-id lists (what the collator pads)."""
        raise NotImplementedError

    def encode(self, ds: datasets.Dataset, column: str, processor: Any) -> tuple[datasets.Dataset, str]:
        """Token ids per example, unpadded (in memory: nothing is written to the datasets cache)."""

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            return {ENCODED: self._encode_batch(batch, column, processor)}

        return ds.map(tokenize, batched=True, keep_in_memory=True, desc="tokenizing"), ENCODED

    def lengths(self, ds: datasets.Dataset, column: str, processor: Any) -> list[int] | None:
        """Tokens per example of a split `encode` tokenized."""
        return [len(v["input_ids"]) for v in column_values(ds, column)]


class TextClassification(_TextBase):
    task = "text-classification"
    pipeline_task = "text-classification"

    def model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def _columns(self, column: str) -> list[str]:
        pair = self.cfg.data.text_pair_column
        return [column, pair] if pair else [column]

    def check_inputs(self, ds: datasets.Dataset, column: str, split: str, on_bad: str, report: DataReport) -> datasets.Dataset:
        """Non-string cells are refused (a wrong column, most likely); empty texts skipped or refused."""
        rows = source_rows(ds)
        keep = []
        for name in self._columns(column):
            if name not in ds.column_names:
                raise DataError(
                    f"the {split} split has no text column {name!r}; its columns are {ds.column_names}. "
                    "Rename the column or set data.text_pair_column=<name>"
                )
        bad: set[int] = set()
        for name in self._columns(column):
            for i, (row, value) in enumerate(zip(rows, column_values(ds, name))):
                if value is not None and not isinstance(value, str):
                    raise DataError(
                        f"row {row} of the {split} split: column {name!r} holds {_kind(value)} ({str(value)[:60]!r}), "
                        f"not text. Point data.text_column (or text_pair_column) at the text column, or make the cell a string"
                    )
                if value is None or not value.strip():
                    why = "empty cell" if value is None else "empty or whitespace-only text"
                    if on_bad == "error":
                        raise DataError(
                            f"row {row} of the {split} split: column {name!r} is an {why}. "
                            "Fill it in or drop the row, or set data.on_bad_file=skip to skip such rows"
                        )
                    if i not in bad:
                        report.skip(split, f"row {row}", f"column {name!r}: {why}")
                    bad.add(i)
        keep = [i for i in range(len(ds)) if i not in bad]
        ds = ds.select(keep) if bad else ds
        if self.cfg.data.text_pair_column and len(ds):
            pair = self.cfg.data.text_pair_column
            # One input value per example: [text, pair], so the shared dataset code stays unaware of pairs.
            ds = ds.map(lambda b: {column: [[a, p] for a, p in zip(b[column], b[pair])]}, batched=True, desc="pairing texts")
        return ds

    def _tokenize(self, inputs: list[Any], processor: Any, **kwargs: Any) -> Any:
        """Texts, or [text, pair] lists, through the tokenizer with the run's truncation."""
        if inputs and isinstance(inputs[0], list):
            texts, pairs = [a for a, _ in inputs], [p for _, p in inputs]
        else:
            texts, pairs = inputs, None
        return processor(texts, pairs, truncation=True, max_length=self.max_length(processor), **kwargs)

    def _encode_batch(self, batch: dict[str, list], column: str, processor: Any) -> list[dict[str, list[int]]]:
        return _rows(self._tokenize(batch[column], processor), len(batch[column]))

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            inputs = [e["input"] for e in examples]
            if isinstance(inputs[0], dict):  # tokenized by `encode`
                batch = pad_batch(inputs, processor)
            else:
                batch = dict(self._tokenize(inputs, processor, padding=True, return_tensors="pt"))
            batch["labels"] = label_tensor([e["labels"] for e in examples])
            return batch

        return collate

    def load_predict_input(self, item: str) -> Any:
        if not item.strip():
            raise DataError("hftl predict got an empty text; pass the texts to classify as arguments")
        return item


class TokenClassification(_TextBase):
    """Named-entity recognition and other word tagging: a tokens column and a tags column (CoNLL layout)."""

    task = "token-classification"
    pipeline_task = "token-classification"
    input_candidates = TOKEN_CANDIDATES
    label_candidates = TAG_CANDIDATES
    label_shapes = False

    def model_class(self) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def load_processor(
        self, name_or_path: str, revision: str | None, trust_remote_code: bool, label_names: list[str] | None = None
    ) -> Any:
        tokenizer = super().load_processor(name_or_path, revision, trust_remote_code)
        try:
            tokenizer(["a", "b"], is_split_into_words=True)
        except (ValueError, TypeError) as e:  # byte-level BPE (RoBERTa, GPT-2) needs add_prefix_space for words
            if "add_prefix_space" not in str(e):
                raise
            tokenizer = load_tokenizer(name_or_path, revision, trust_remote_code, add_prefix_space=True)
            tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        _check_word_alignment(tokenizer, name_or_path)
        return tokenizer

    def prepare_inputs(self, ds: datasets.Dataset, column: str, where: str) -> datasets.Dataset:
        """Words per row: a list, or a string split on whitespace (csv files cannot hold lists)."""
        if isinstance(ds.features[column], datasets.Value) and ds.features[column].dtype in ("string", "large_string"):
            return ds.map(lambda b: {column: [v.split() if v else [] for v in b[column]]}, batched=True, desc="splitting words")
        return ds

    def check_inputs(self, ds: datasets.Dataset, column: str, split: str, on_bad: str, report: DataReport) -> datasets.Dataset:
        rows = source_rows(ds)
        good = []
        for i, (row, words) in enumerate(zip(rows, column_values(ds, column))):
            if words is not None and (not isinstance(words, list) or not all(isinstance(w, str) for w in words)):
                raise DataError(
                    f"row {row} of the {split} split: column {column!r} must hold a list of words (or a space-separated "
                    f"string), got {_kind(words)} ({str(words)[:60]!r}). Point data.tokens_column at the words column"
                )
            if not words or not any(w.strip() for w in words):
                if on_bad == "error":
                    raise DataError(
                        f"row {row} of the {split} split: column {column!r} has no words. "
                        "Drop the row, or set data.on_bad_file=skip to skip such rows"
                    )
                report.skip(split, f"row {row}", f"column {column!r}: no words")
                continue
            good.append(i)
        return ds.select(good) if len(good) < len(ds) else ds

    def _tags(self, ds: datasets.Dataset, column: str) -> tuple[list[Any], list[str] | None]:
        feature = ds.features[column]
        inner = getattr(feature, "feature", None)
        names = list(inner.names) if isinstance(inner, datasets.ClassLabel) else None
        values = column_values(ds, column)
        if isinstance(feature, datasets.Value):  # a csv cell "B-PER I-PER O"
            values = [v.split() if isinstance(v, str) else v for v in values]
        return values, names

    def label_space(self, ds: datasets.Dataset, column: str, where: str) -> LabelSpace:
        return LabelSpace(SINGLE, self.label_names(ds, column, where))

    def label_names(self, ds: datasets.Dataset, column: str, where: str) -> list[str]:
        values, names = self._tags(ds, column)
        if names is not None:
            return names
        rows = source_rows(ds)
        distinct: set[Any] = set()
        for row, tags in zip(rows, values):
            if not isinstance(tags, list) or any(t is None or isinstance(t, (list, dict, float)) for t in tags):
                raise DataError(
                    f"{where}: row {row} column {column!r} must hold one tag per word (a list, or a space-separated string), "
                    f"got {str(tags)[:80]!r}. Point data.tags_column at the tags column"
                )
            distinct.update(tags)
        if all(isinstance(t, int) and not isinstance(t, bool) for t in distinct):
            return [str(t) for t in sorted(distinct)]
        text = sorted({str(t) for t in distinct})
        return (["O"] + [t for t in text if t != "O"]) if "O" in text else text

    def encode_labels(
        self, ds: datasets.Dataset, column: str, labels: LabelSpace | list[str], split: str, where: str
    ) -> datasets.Dataset:
        names = as_space(labels).names
        values, own_names = self._tags(ds, column)
        index = {name: i for i, name in enumerate(names)}
        rows = source_rows(ds)
        words_column = self.cfg.data.input_column or self.detect_input_column(ds, where)
        encoded = []
        for row, tags, words in zip(rows, values, column_values(ds, words_column)):
            if not isinstance(tags, list):
                raise DataError(f"{where}: row {row} of the {split} split has no tags in column {column!r}")
            if len(tags) != len(words):
                raise DataError(
                    f"{where}: row {row} of the {split} split has {len(words)} words but {len(tags)} tags in column "
                    f"{column!r}; every word needs exactly one tag. Fix the row or drop it"
                )
            ids = []
            for tag in tags:
                text = own_names[tag] if own_names is not None and isinstance(tag, int) else str(tag)
                if text not in index:
                    raise DataError(
                        f"{where}: row {row} of the {split} split has tag {text!r}, which the training data never has "
                        f"(train tags: {', '.join(names[:20])}). Fix the tag, or add training examples of it"
                    )
                ids.append(index[text])
            encoded.append(ids)
        if "labels" in ds.column_names:
            ds = ds.remove_columns("labels")
        return ds.add_column("labels", encoded)

    def _encode_words(self, words: list[list[str]], word_labels: list[list[int]], processor: Any) -> list[dict[str, list[int]]]:
        """Token ids per example, unpadded, with each sub-token's label (see `align_labels`)."""
        encoding = processor(words, is_split_into_words=True, truncation=True, max_length=self.max_length(processor))
        rows = _rows(encoding, len(words))
        for i, row in enumerate(rows):
            row[_WORD_LABELS] = align_labels(encoding.word_ids(i), word_labels[i])
        return rows

    def _encode_batch(self, batch: dict[str, list], column: str, processor: Any) -> list[dict[str, list[int]]]:
        return self._encode_words(batch[column], batch["labels"], processor)

    def collator(self, processor: Any) -> Callable[[list[dict]], dict]:
        def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
            inputs = [e["input"] for e in examples]
            if not isinstance(inputs[0], dict):  # words not yet tokenized by `encode`
                inputs = self._encode_words(inputs, [e["labels"] for e in examples], processor)
            batch = pad_batch(inputs, processor, {_WORD_LABELS: IGNORE})
            batch["labels"] = batch.pop(_WORD_LABELS)
            return batch

        return collate

    def evaluator(self, processor: Any, labels: LabelSpace | list[str]) -> Evaluator:
        return TokenClassificationEvaluator(as_space(labels).names)

    def load_predict_input(self, item: str) -> Any:
        if not item.strip():
            raise DataError("hftl predict got an empty text; pass the sentences to tag as arguments")
        return item

    def predict(self, pipe: Any, inputs: list[Any], top_k: int) -> list[Any]:
        """Entities per input: `{"entity_group", "word", "score", "start", "end"}` (sub-tokens merged)."""
        outputs = pipe(inputs, aggregation_strategy="simple")
        if inputs and outputs and isinstance(outputs[0], dict):  # one input: the pipeline returns its entities
            outputs = [outputs]
        return [[{**e, "score": float(e["score"])} for e in out] for out in outputs]
