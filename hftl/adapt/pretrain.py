"""Continued pretraining on the target's text before fine-tuning (DAPT / TAPT, Gururangan et al. 2020, "Don't Stop
Pretraining"): masked language modelling on `data.target`, from the checkpoint, into a folder the fine-tuning run
then starts from. The folder is cached by what makes it (checkpoint, target texts, settings), so every strategy
of an adaptation study shares one pretraining, and a resumed run does not pretrain again.

Example:
    >>> folder, record = pretrain_on_target(cfg, ["great plot", "dull film"])   # doctest: +SKIP
    >>> record["held_out_loss_before"] > record["held_out_loss_after"]          # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from hftl.config import Config
from hftl.utils.errors import ConfigError, HftlError
from hftl.utils.files import build_folder_once

RECORD = "pretrain.json"  # written last: its presence marks a finished pretraining
HELD_OUT = 0.1  # of the target texts, to measure the masked-LM loss before and after on text it did not train on


def pretrained_dir() -> Path:
    """Where pretrained-on-target checkpoints are kept: $HFTL_PRETRAINED or ~/.cache/hftl/pretrained."""
    return Path(os.environ.get("HFTL_PRETRAINED", "~/.cache/hftl/pretrained")).expanduser()


def check_masked_lm(cfg: Config, config: Any) -> None:
    """Refuse a checkpoint transformers has no masked-language-model class for (a decoder-only model)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if getattr(config, "model_type", None) not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ConfigError(
            f"adapt.method=pretrain is masked language modelling, and {cfg.model.name_or_path} "
            f"({getattr(config, 'model_type', '?')}) has no masked-LM form in transformers; use adapt.method=coral, dann "
            "or self_training"
        )


def pretrain_on_target(cfg: Config, texts: list[str]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint after `adapt.pretrain_epochs` of masked language modelling on `texts` (cached), and its record:
    the masked-LM loss per epoch and on held-out target text before and after."""
    if len(texts) < 10:
        raise HftlError(f"adapt.method=pretrain needs at least 10 target texts to learn from, data.target has {len(texts)}")
    folder = pretrained_dir() / _key(cfg, texts)
    if not (folder / RECORD).is_file():
        print(f"adapt: masked language modelling on {len(texts)} target texts -> {folder}", flush=True)
        build_folder_once(folder, lambda tmp: _pretrain(cfg, texts, tmp), lambda f: (f / RECORD).is_file())
    else:
        print(f"adapt: reusing the pretraining on these target texts in {folder}", flush=True)
    return folder, json.loads((folder / RECORD).read_text())


def _key(cfg: Config, texts: list[str]) -> str:
    a = cfg.adapt
    h = hashlib.blake2b(digest_size=12)
    what = [cfg.model.name_or_path, cfg.model.revision, a.pretrain_epochs, a.pretrain_learning_rate, a.mlm_probability]
    what += [cfg.train.seed, cfg.train.batch_size, cfg.data.max_length, 1]  # 1: this module's version of the recipe
    h.update(json.dumps(what, default=str).encode())
    for text in texts:
        h.update(text.encode() + b"\0")
    return h.hexdigest()


def _pretrain(cfg: Config, texts: list[str], out: Path) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling

    m, a, t = cfg.model, cfg.adapt, cfg.train
    tokenizer = AutoTokenizer.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    if tokenizer.mask_token is None:
        raise ConfigError(f"adapt.method=pretrain: the tokenizer of {m.name_or_path} has no mask token to train with")
    with torch.random.fork_rng(devices=[]):  # the masked-LM head's init and the masks: seeded, the run's RNG untouched
        torch.manual_seed(t.seed)
        model = AutoModelForMaskedLM.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
        order = torch.randperm(len(texts)).tolist()
        held = [texts[i] for i in order[: max(1, int(len(texts) * HELD_OUT))]]
        train = [texts[i] for i in order[len(held) :]]
        limit = cfg.data.max_length or min(getattr(tokenizer, "model_max_length", 512), 512)
        encode = lambda batch: tokenizer(batch, truncation=True, max_length=limit)  # noqa: E731
        collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=a.mlm_probability)
        record: dict[str, Any] = {"texts": len(texts), "held_out_texts": len(held), "epochs": a.pretrain_epochs}
        record["held_out_loss_before"] = _held_out_loss(model, encode, collate, held, t.seed)
        started = time.perf_counter()
        record["epoch_losses"] = _train(model, encode, collate, train, cfg)
        record["seconds"] = round(time.perf_counter() - started, 2)
        record["held_out_loss_after"] = _held_out_loss(model, encode, collate, held, t.seed)
    _save_base(cfg, model, out)
    tokenizer.save_pretrained(out)
    (out / RECORD).write_text(json.dumps(record, indent=2))
    print(
        f"adapt: masked-LM loss on held-out target text {record['held_out_loss_before']:.3f} -> "
        f"{record['held_out_loss_after']:.3f} after {a.pretrain_epochs} epoch(s), {record['seconds']:.0f} s",
        flush=True,
    )


def _save_base(cfg: Config, mlm: Any, out: Path) -> None:
    """Save the checkpoint's base model with the pretrained weights: what the masked-LM model lacks (BERT's pooler,
    which a classification head reads) stays as the checkpoint had it, rather than starting from random."""
    from transformers import AutoModel

    m = cfg.model
    base = AutoModel.from_pretrained(m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    result = base.load_state_dict(mlm.base_model.state_dict(), strict=False)
    if result.unexpected_keys:
        raise HftlError(
            f"adapt.method=pretrain: the masked-LM model of {m.name_or_path} has weights its base model lacks "
            f"({result.unexpected_keys[:3]}); this architecture cannot be pretrained this way"
        )
    base.save_pretrained(out)


def _masked(texts: list[str], encode: Any, collate: Any) -> dict[str, torch.Tensor]:
    """Tokenize `texts` and let the collator pad them and draw their masks (it takes one example per dict)."""
    encoded = encode(texts)
    return collate([{k: encoded[k][i] for k in encoded} for i in range(len(texts))])


def _batches(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def _train(model: Any, encode: Any, collate: Any, texts: list[str], cfg: Config) -> list[float]:
    a, size = cfg.adapt, cfg.train.batch_size
    steps = a.pretrain_epochs * math.ceil(len(texts) / size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=a.pretrain_learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))  # linear decay, as TAPT
    losses = []
    model.train()
    for epoch in range(a.pretrain_epochs):
        order = torch.randperm(len(texts)).tolist()
        total, count = 0.0, 0
        for batch in tqdm(_batches([texts[i] for i in order], size), desc=f"masked-LM epoch {epoch + 1}", leave=False):
            inputs = _masked(batch, encode, collate)
            loss = model(**inputs).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            total, count = total + loss.item(), count + 1
        losses.append(round(total / max(count, 1), 4))
    return losses


def _held_out_loss(model: Any, encode: Any, collate: Any, texts: list[str], seed: int) -> float:
    """Masked-LM loss on `texts` with the same masks each time (seeded), so before and after compare."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed + 7)
        for batch in _batches(texts, 32):
            inputs = _masked(batch, encode, collate)
            total += model(**inputs).loss.item() * len(batch)
            count += len(batch)
    model.train(was_training)
    return round(total / max(count, 1), 4)
