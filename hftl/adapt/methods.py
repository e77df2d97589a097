"""What `adapt.method` adds to a training run, as hooks the trainer calls at fixed points:

- `attach` (before the optimizer exists): DANN's domain classifier joins the model and the plan;
- `begin` (a fresh run, before range tests and the feature cache): AdaBN's source statistics, the shift before;
- `start_epoch`: self-training's round of pseudo-labels;
- `loss` (every step): the task loss plus CORAL's, DANN's or the pseudo-labelled target's term;
- `finish` (after the best weights are back): AdaBN's target statistics, the shift after, the classifier removed.

Example:
    >>> adaptation = Adaptation(cfg, data, layer_map, run_dir)   # doctest: +SKIP
    >>> plan = adaptation.attach(model, plan)                    # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hftl.adapt.a_distance import proxy_a_distance
from hftl.adapt.adabn import batch_norms, reestimate, running_statistics_kept
from hftl.adapt.coral import coral_loss
from hftl.adapt.dann import DISCRIMINATOR, dann_lambda, domain_classifier, domain_loss
from hftl.adapt.features import HeadInputs, feature_width, head_module, model_inputs
from hftl.adapt.self_training import (
    PSEUDO_LABELS_DIR,
    pseudo_label,
    read_pseudo_labels,
    round_at,
    round_starts,
    write_pseudo_labels,
)
from hftl.adapt.strong_views import strong_view
from hftl.adapt.target_stream import TargetStream
from hftl.config import Config
from hftl.data.sources import ExampleDataset
from hftl.models.layer_map import LayerMap
from hftl.models.strategies import Plan
from hftl.utils.errors import ConfigError, HftlError

STEPPED = ("coral", "dann", "self_training")  # methods that feed target batches through the model every step
SHIFT_EXAMPLES = 500  # per domain, for the shift before and after: enough for a stable linear domain classifier


def check_adaptation(cfg: Config, model: nn.Module, layer_map: LayerMap) -> None:
    """What only the loaded model and data can tell: refused before the run folder is claimed."""
    method = cfg.adapt.method
    if method == "adabn" and not batch_norms(model):
        raise ConfigError(
            f"adapt.method=adabn re-estimates BatchNorm statistics, and {cfg.model.name_or_path} has no BatchNorm layer; "
            "use adapt.method=coral, dann or self_training"
        )
    if method in ("coral", "dann"):
        head_module(model, layer_map)  # fails now, naming the layer, rather than at the first step
    if method == "self_training" and cfg.data.problem != "single_label":
        raise ConfigError(
            f"adapt.method=self_training pseudo-labels one class per example; data.problem={cfg.data.problem} has no "
            "single class to pick. Use adapt.method=coral or dann"
        )


class Adaptation:
    """One run's adaptation: `adapt.method` and the target data it uses (`data.target`)."""

    def __init__(
        self, cfg: Config, data: Any, layer_map: LayerMap, run_dir: Path, pretrained: dict[str, Any] | None = None
    ) -> None:
        self.cfg, self.data, self.layer_map, self.run_dir = cfg, data, layer_map, run_dir
        self.pretrained = pretrained  # adapt.method=pretrain: the masked-LM pretraining's record
        self.method = cfg.adapt.method
        self.stream: TargetStream | None = None
        self.pseudo: list[int] = []
        self.round: int | None = None
        self.starts = round_starts(cfg.train.epochs, cfg.adapt.rounds) if self.method == "self_training" else []
        self.lambd = 0.0

    @property
    def cache_refusal(self) -> str | None:
        """Why the feature cache cannot serve this run's training, or None."""
        if self.method in STEPPED:
            return f"adapt.method={self.method} feeds target examples through the whole model every step"
        return None

    def attach(self, model: nn.Module, plan: Plan) -> Plan:
        """DANN's domain classifier joins `model` and every phase of `plan`; other methods leave both as they are."""
        if self.method != "dann":
            return plan
        width = feature_width(head_module(model, self.layer_map))
        with torch.random.fork_rng(devices=[]):  # seeded on its own: the run's RNG stream stays as without it
            torch.manual_seed(self.cfg.train.seed + 2)
            model.add_module(DISCRIMINATOR, domain_classifier(width, self.cfg.adapt.dann_hidden))
        names = frozenset(n for n, _ in model.named_parameters() if n.startswith(DISCRIMINATOR + "."))
        return Plan(tuple(replace(p, trainable=p.trainable | names) for p in plan.phases))

    def setup(self, accelerator: Any) -> None:
        """The target batch stream, for the methods that train on target batches."""
        if self.method not in STEPPED:
            return
        if accelerator.num_processes > 1:
            raise HftlError(
                f"adapt.method={self.method} runs on one process for now (its target batches are drawn beside the "
                "source's); launch without multiple processes, or use adapt.method=adabn"
            )
        t = self.cfg.train
        self.stream = TargetStream(self.data.target, self.data.collate, t.batch_size, t.seed + 1)

    # -- the hooks --------------------------------------------------------------------------------
    def begin(self, run: Any) -> dict[str, Any]:
        """On a fresh run: AdaBN's source statistics, then the shift the pretrained features see."""
        info: dict[str, Any] = {"method": self.method, **({"pretrain": self.pretrained} if self.pretrained else {})}
        if self.method == "adabn":
            seen = reestimate(run.raw, self._batches(_plain(self.data.train)), run.accelerator.device, "AdaBN (source)")
            layers = len(batch_norms(run.raw))
            run.accelerator.print(f"adapt: AdaBN set {layers} BatchNorm layers to the source's statistics ({seen} examples)")
        info["shift_before"] = self.shift(run)
        return info

    def start_epoch(self, run: Any, epoch: int) -> None:
        """Self-training: at a round's first epoch the model labels the target (or a resumed run reads them back)."""
        if self.method != "self_training":
            return
        number = round_at(epoch, self.starts)
        if number is None or number == self.round:
            return
        path = self.run_dir / PSEUDO_LABELS_DIR / f"round-{number}.csv"
        names = [run.raw.config.id2label[i] for i in range(len(run.raw.config.id2label))]
        if not path.exists():
            labels, confidence = pseudo_label(run.raw, self._batches(_plain(self.data.target)), run.accelerator.device)
            if run.accelerator.is_main_process:
                write_pseudo_labels(path, labels, confidence, names, self.cfg.adapt.threshold)
            run.accelerator.wait_for_everyone()
        self.pseudo, used = read_pseudo_labels(path, names)
        self.round = number
        self.stream.set_pool(used)
        run.accelerator.print(
            f"adapt: self-training round {number}: {len(used)} of {len(self.pseudo)} target examples labelled with "
            f"confidence >= {self.cfg.adapt.threshold} ({path})"
        )

    def loss(self, run: Any, model: nn.Module, batch: dict[str, Any], state: Any) -> torch.Tensor:
        """The step's loss: the task's on the source batch, plus the method's term on a target batch."""
        if self.method not in STEPPED:
            return run.loss(model, batch)
        if self.method == "self_training":
            return self._self_training_loss(run, model, batch, state)
        target = self.stream.batch(state.epoch, state.batch_in_epoch, run.accelerator.device)
        with HeadInputs(run.raw, self.layer_map) as caught:
            task = run.loss(model, batch)
            source_features = caught.take()
            model(**_inputs(target))
            target_features = caught.take()
        if self.method == "coral":
            return task + self.cfg.adapt.coral_weight * coral_loss(source_features, target_features)
        a = self.cfg.adapt
        self.lambd = dann_lambda(state.global_step, run.total_steps, a.dann_lambda, a.dann_gamma)
        classifier = getattr(run.raw, DISCRIMINATOR)
        return task + domain_loss(classifier, source_features, target_features, self.lambd)

    def _self_training_loss(self, run: Any, model: nn.Module, batch: dict, state: Any) -> torch.Tensor:
        task = run.loss(model, batch)
        if self.round is None or not self.stream.pool:  # before the first round, or nothing confident yet
            return task
        target = self.stream.batch(state.epoch, state.batch_in_epoch, run.accelerator.device)
        indices = self.stream.indices(state.epoch, state.batch_in_epoch)
        labels = torch.tensor([self.pseudo[i] for i in indices], device=run.accelerator.device)
        seed = (self.cfg.train.seed * 1_000_003 + state.epoch) * 100_003 + state.batch_in_epoch
        tokenizer = getattr(self.data.processor, "tokenizer", self.data.processor)
        mask_id = getattr(tokenizer, "mask_token_id", None)
        mask_id = mask_id if mask_id is not None else getattr(tokenizer, "unk_token_id", None)
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        strong = strong_view(target, torch.Generator().manual_seed(seed), mask_id, special)
        with running_statistics_kept(run.raw):  # distorted views: normalised by their batch, never remembered
            logits = model(**_inputs(strong)).logits
        return task + self.cfg.adapt.target_weight * nn.functional.cross_entropy(logits.float(), labels)

    def finish(self, run: Any) -> dict[str, Any]:
        """After the best weights are back and the cache is closed: AdaBN's target statistics, the shift after,
        DANN's classifier removed. Returns what metrics.json's `adapt` adds."""
        info: dict[str, Any] = {}
        if self.method == "adabn":
            seen = reestimate(run.raw, self._batches(_plain(self.data.target)), run.accelerator.device, "AdaBN (target)")
            info["target_examples_for_statistics"] = seen
            run.accelerator.print(f"adapt: AdaBN set the BatchNorm statistics to the target's ({seen} examples)")
        if hasattr(run.raw, DISCRIMINATOR):
            delattr(run.raw, DISCRIMINATOR)
        info["shift_after"] = self.shift(run)
        if self.method == "self_training":
            info["rounds"] = len(self.starts)
            info["pseudo_labels"] = PSEUDO_LABELS_DIR
        return info

    def shift(self, run: Any) -> float | None:
        """The proxy A-distance between source and target training inputs' features at the head's input (at most
        SHIFT_EXAMPLES of each, spread over the set), or None when a domain has too few examples to measure it."""
        if self.data.target is None:
            return None
        found = []
        for name, ds in (("source", self.data.train), ("target", self.data.target)):
            plain = _plain(ds)
            step = max(1, len(plain) // SHIFT_EXAMPLES)
            subset = torch.utils.data.Subset(plain, range(0, len(plain), step)[:SHIFT_EXAMPLES])
            found.append(_features(run, self._batches(subset), f"shift: {name} features"))
        try:
            return round(proxy_a_distance(found[0], found[1], seed=self.cfg.train.seed), 4)
        except HftlError as e:  # too few examples: the run goes on, the shift is not measured
            run.accelerator.print(f"adapt: shift not measured ({e})")
            return None

    def _batches(self, dataset: Any) -> DataLoader:
        t = self.cfg.train
        return DataLoader(dataset, batch_size=t.eval_batch_size or t.batch_size, collate_fn=self.data.collate)


def _plain(ds: ExampleDataset) -> ExampleDataset:
    """The same examples without augmentation and without cached features."""
    return ExampleDataset(ds.ds, ds.column, ds.load)


def _inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != "labels"}


def _features(run: Any, batches: DataLoader, desc: str) -> Any:
    model, device = run.raw, run.accelerator.device
    was_training = model.training
    model.eval()
    out = []
    try:
        with HeadInputs(model, run.layer_map) as caught, torch.no_grad():
            for batch in tqdm(batches, desc=desc, leave=False, disable=not run.accelerator.is_local_main_process):
                model(**model_inputs(batch, device))
                out.append(caught.take().float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()
