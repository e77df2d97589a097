"""`hftl shift`: how far the target domain (`data.target`) lies from the source (`data.train`), block by block, as a
frozen model sees them.

The model runs once over the source's training split and once over the target's inputs (`probe_features`: every
block's output pooled, kept in the feature cache, so a second measurement, or a `hftl probe` of the same model and
data, reads the source's pass back). At each block a linear classifier learns to tell the two domains apart, and
its held-out error gives the proxy A-distance (`hftl.adapt.a_distance`): 0 when the block sees no difference, 2
when a linear boundary separates the domains. Where along the depth the distance is high says which kind of shift
it is, and so which `adapt.method` to try first (`shift_report.read_shift`).

Given a finished run folder instead of a config, its `config.yaml` and fine-tuned `model/` are measured: the shift
that is left after adaptation. Labels in `data.target` are never read.

Example:
    >>> result = shift("configs/vision/vit-head-only.yaml", data={"train": "photos/", "target": "sketches/"})  # doctest: +SKIP
    >>> [round(b.a_distance, 2) for b in result.blocks], result.kind  # doctest: +SKIP
    ([1.84, 1.9, 1.93], 'low_level')
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hftl.adapt.a_distance import MIN_PER_DOMAIN, measure_a_distance
from hftl.config import CLASSIFICATION_TASKS, Config, load_config
from hftl.run_folder.layout import METRICS_FILE, STUDY_FILE, load_run
from hftl.studies.shift_report import read_shift, short_name, write_shift_report
from hftl.utils.errors import ConfigError, HftlError
from hftl.utils.files import atomic_write_text

SHIFT_FILE = "shift.json"
RUN_SHIFT_DIR = "shift"  # inside a run folder: the shift its model/ leaves
CONFIG_SUFFIX = "-shift"  # beside a config's output_dir, which stays free for the run itself


@dataclass
class BlockShift:
    """One block's measurement."""

    block: int  # 1-based, bottom first, as `hftl probe` and strategy.keep_blocks count
    a_distance: float  # in [0, 2]
    domain_error: float  # the domain classifier's held-out error
    uncertainty: float  # about one standard error of a_distance


@dataclass
class ShiftResult:
    """What `shift` measured and concluded, and where it wrote it."""

    output_dir: Path
    model: str
    source: str
    target: str
    examples: dict[str, int]  # source, target, per_domain (after balancing), held_out
    blocks: list[BlockShift] = field(default_factory=list)
    kind: str = ""  # alike, low_level, top_blocks or moderate (shift_report.read_shift)
    verdict: str = ""
    batchnorm: bool = False  # whether the model has BatchNorm layers (what AdaBN re-estimates)
    seed: int = 0
    forward_seconds: float = 0.0  # the frozen passes (0 when both were read from the cache)
    reused: bool = False
    report_md: Path | None = None
    plot: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "source": self.source, "target": self.target, "examples": self.examples,
            "blocks": [asdict(b) for b in self.blocks], "kind": self.kind, "verdict": self.verdict,
            "batchnorm": self.batchnorm, "seed": self.seed, "forward_seconds": self.forward_seconds, "reused": self.reused,
        }  # fmt: skip


def shift(config: str | Path | dict | Config, output: str | Path | None = None, **overrides: Any) -> ShiftResult:
    """Measure the shift from `data.train` to `data.target` at every block of the config's model; `config` may also
    be a finished run folder (its config and fine-tuned `model/`). Overrides as in `finetune` (nested dicts for
    sections, dotted keys as strings). Writes shift.json, shift.md and shift.png into `output` (default: the
    config's output_dir + "-shift", or RUN/shift/ for a run folder).

    Example:
        >>> result = shift("runs/vit-dann", data={"target": "sketches/"})  # doctest: +SKIP
        >>> result.output_dir, result.kind  # doctest: +SKIP
        (PosixPath('runs/vit-dann/shift'), 'alike')
    """
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    return run_shift(config, flat, output)


def run_shift(
    config_or_run: str | Path | dict | Config,
    overrides: list[str] | dict[str, Any] | None = None,
    output: str | Path | None = None,
) -> ShiftResult:
    """`shift` with overrides as `key=value` strings (the CLI) or a flat dict of dotted keys.

    Example:
        >>> run_shift("configs/text/bert-head-only.yaml", ["data.train=a.csv", "data.target=b.csv"])  # doctest: +SKIP
    """
    cfg, default_out, model = _load(config_or_run, overrides or [])
    out = Path(output) if output is not None else default_out
    check_output(out)
    return _write(_measure(cfg, model, out))


def _load(source: str | Path | dict | Config, overrides: list[str] | dict[str, Any]) -> tuple[Config, Path, str]:
    """The config (a run folder's own, pointed at its model/), the default output folder and the model's name."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        saved, model_dir = load_run(source)
        cfg = load_config(saved, overrides)  # data.target=... for a run trained without one
        cfg.model.name_or_path, cfg.model.revision = str(model_dir), None
        cfg.strategy.keep_blocks = None  # model/ holds the blocks the run kept: cutting again would cut twice
        out = Path(source) / RUN_SHIFT_DIR
    else:
        cfg = load_config(source, overrides)
        out = Path(cfg.output_dir.rstrip("/") + CONFIG_SUFFIX)
    if not cfg.data.target:
        raise ConfigError(
            "hftl shift measures how far data.target lies from data.train: set data.target=PATH (the target domain's "
            "inputs: a folder, csv or Hub id of the same kind as data.train; labels in it are never read)"
        )
    if cfg.task not in CLASSIFICATION_TASKS:
        raise ConfigError(f"hftl shift measures {', '.join(CLASSIFICATION_TASKS)}; task={cfg.task} is not supported yet")
    return cfg, out, cfg.model.name_or_path


def check_output(out: Path) -> None:
    """The shift's folder: new, empty, or an earlier shift's (rewritten); never a run's or a study's own files.

    Example:
        >>> check_output(Path("runs/vit-head-only-shift"))  # doctest: +SKIP
    """
    if not out.is_dir() or not any(out.iterdir()) or (out / SHIFT_FILE).exists():
        return
    what = "a finished run" if (out / METRICS_FILE).exists() else "a study" if (out / STUDY_FILE).exists() else "other files"
    raise HftlError(f"output folder {out} holds {what}; give hftl shift a new or empty folder (--output DIR)")


def _measure(cfg: Config, model_name: str, out: Path) -> ShiftResult:
    """Load both domains and the model, pool every block over each, and measure the distance at every block."""
    from hftl.data.modalities import get_modality
    from hftl.data.sources import load_splits
    from hftl.data.target import load_target
    from hftl.runs.finetune import resolve_builtins

    named = (cfg.data.train, cfg.data.target)  # as the user wrote them, before builtin: names become folders
    resolve_builtins(cfg)
    cfg.data.augment = False  # the features of the examples themselves
    # Set on the validated config, not validated again: head_only keeps the checkpoint's weights (scratch would not)
    # and wraps nothing, and adapt.method plays no part in a measurement (dann with head_only would be refused).
    cfg.strategy.name, cfg.adapt.method = "head_only", "none"
    modality = get_modality(cfg.task, cfg)
    splits = load_splits(cfg.data, modality, cfg.train.seed)
    target = load_target(cfg.data, modality, splits.input_column, splits.report, splits.train)
    if splits.report.total():
        print(splits.report.summary())
    if min(len(splits.train), len(target)) < MIN_PER_DOMAIN:
        raise HftlError(
            f"hftl shift needs at least {MIN_PER_DOMAIN} examples of each domain; data.train's training split has "
            f"{len(splits.train)} and data.target {len(target)}: add examples to the smaller one"
        )
    examples = {"source": len(splits.train), "target": len(target)}
    result = ShiftResult(out, model_name, named[0], named[1], examples, seed=cfg.train.seed)
    print(f"\n=== shift: {model_name}: {len(splits.train)} source and {len(target)} target examples", flush=True)
    source_blocks, target_blocks = _block_features(cfg, modality, splits, target, result)
    for i, (s, t) in enumerate(zip(source_blocks, target_blocks, strict=True), 1):
        found = measure_a_distance(s, t, seed=cfg.train.seed)
        result.blocks.append(BlockShift(i, found.a_distance, found.error, found.uncertainty))
        result.examples.update(per_domain=found.per_domain, held_out=found.held_out)
        print(
            f"  block {i}/{len(source_blocks)}: A-distance {found.a_distance:.3f} "
            f"(domain error {found.error:.3f}, about ±{found.uncertainty:.2f})",
            flush=True,
        )
    return result


def _block_features(cfg: Config, modality: Any, splits: Any, target: Any, result: ShiftResult) -> tuple[list, list]:
    """Every block's pooled output over the source's training split and over the target, from the cache or computed."""
    from accelerate import PartialState
    from accelerate.utils import set_seed
    from torch import nn

    from hftl.data.sources import ExampleDataset
    from hftl.models.loading import setup_model
    from hftl.runs.finetune import setup_data
    from hftl.studies.probe_features import block_features

    set_seed(cfg.train.seed)
    model, processor, layer_map, _ = setup_model(cfg, modality, splits.labels)
    model.to(PartialState().device)
    result.batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    data = setup_data(cfg, modality, processor, splits)
    encoded, column = modality.encode(target, splits.input_column, processor)
    target_ds = ExampleDataset(encoded, column, modality.loader(processor))
    # The probe's settings and batch size: the same key, so a probe's pass over this training split is reused.
    settings = {k: getattr(cfg.data, k) for k in ("max_length", "max_duration_seconds", "text_pair_column")}
    name = short_name(result.model)
    batch = cfg.train.batch_size
    found = [
        block_features(model, layer_map, ds, data.collate, processor, about, settings, batch_size=batch)
        for about, ds in (
            ({"model": name, "split": "train (shift)"}, data.train),
            ({"model": name, "split": "target (shift)"}, target_ds),
        )
    ]
    del model
    result.forward_seconds = sum(f.seconds for f in found)
    result.reused = all(f.reused for f in found)
    return found[0].blocks, found[1].blocks


def _write(result: ShiftResult) -> ShiftResult:
    distances = [b.a_distance for b in result.blocks]
    result.kind, result.verdict = read_shift(distances, result.batchnorm, result.examples.get("held_out", 0))
    result.output_dir.mkdir(parents=True, exist_ok=True)
    result.report_md, result.plot = write_shift_report(result)
    atomic_write_text(result.output_dir / SHIFT_FILE, json.dumps(result.to_dict(), indent=2))
    return result
