"""An exploratory end-to-end sweep outside pytest, at other tiny shapes than the suite's: every case of the five
task mappings, head_only / freeze / lora for two steps each (defaults, feature cache on), then `model/` in its
pipeline; each case's outcome is recorded, not asserted.

    python scripts/architecture_sweep.py --layers 4 --window 8 --out sweep-4-layers.json   # about 15 min, 2 cores
    python scripts/architecture_sweep.py --only canine,longformer --layers 4 --out two.json

Outcomes: `e2e`; `refused` (hftl's own error, before or during the run: the message is kept); `crashed` (any other
exception: its type, message and the last hftl frame); `unbuildable` (the tiny config does not build or run in
transformers itself). With 4 layers, freeze keeps frozen blocks below the trained one, so the feature cache's
block cut runs, which the suite's 2-layer configs never reach. The suite's sweep is tests/models/test_architectures.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shaped(tm, layers: int, window: int) -> None:
    """The suite's tiny configs with `layers` layers and attention windows of `window` tokens."""
    keys = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "depth")
    tm._INT_KEYS.update(dict.fromkeys(keys, layers))
    plain = tm.tiny_config

    def config(task, model_type, image_size=None, extra=None):
        c = plain(task, model_type, image_size, extra)
        for sub in [c] + [getattr(c, s, None) for s in tm._SUBCONFIGS]:
            aw = getattr(sub, "attention_window", None)
            if isinstance(aw, (list, int)):
                sub.attention_window = [window] * len(aw) if isinstance(aw, list) else window
        return c

    tm.tiny_config = config


def run_case(task: str, model_type: str, data: dict[str, Path], root: Path) -> dict:
    import torch
    from transformers import pipeline

    from hftl import finetune
    from hftl.utils.errors import HftlError
    from tests import tiny_models as tm
    from tests.models.test_architectures import _one_input

    try:
        torch.manual_seed(0)
        folder = tm.save_tiny(task, model_type, root / "ckpt")
    except Exception as e:  # noqa: BLE001 - recorded: this config does not build or run in transformers
        return {"outcome": "unbuildable", "error": f"{type(e).__name__}: {str(e).strip()[:200]}"}
    stage = "head_only"
    try:
        for stage in ("head_only", "freeze", "lora"):
            config = {"task": task, "model": {"name_or_path": str(folder)}, "data": {"train": str(data[task])}}
            train = {"batch_size": 4, "report_to": "none", "max_steps": 2}
            finetune(config, strategy=stage, epochs=1, output_dir=str(root / stage), train=train)
        stage = "reload"
        pipeline(tm.PIPELINES[task], model=str(root / "lora" / "model"))(_one_input(task, data[task]))
        return {"outcome": "e2e"}
    except HftlError as e:
        return {"outcome": "refused", "stage": stage, "error": str(e)[:300]}
    except Exception as e:  # noqa: BLE001 - recorded: the point of the sweep
        frames = [f"{Path(f.filename).name}:{f.name}" for f in traceback.extract_tb(e.__traceback__) if "/hftl/" in f.filename]
        return {"outcome": "crashed", "stage": stage, "error": f"{type(e).__name__}: {str(e)[:200]}", "where": frames[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--window", type=int, default=8, help="attention window of windowed-attention models (tokens)")
    parser.add_argument("--only", help="comma-separated model types")
    parser.add_argument("--out", type=Path, default=Path("architecture-sweep.json"))
    args = parser.parse_args()

    from hftl.builtin import write_digits_imagefolder
    from tests import tiny_models as tm
    from tests.audio_fixtures import write_tone_classes, write_tone_sequences
    from tests.text_data import sentiment_rows, tagging_rows, write_csv, write_jsonl

    shaped(tm, args.layers, args.window)
    root = Path(tempfile.mkdtemp(prefix="hftl-sweep-"))
    data = {
        "image-classification": write_digits_imagefolder(root / "digits", per_class=4),
        "text-classification": write_csv(root / "sentiment.csv", sentiment_rows(24)),
        "token-classification": write_jsonl(root / "tags.jsonl", tagging_rows(24)),
        "audio-classification": write_tone_classes(root / "tones", per_class=6),
        "speech-recognition": write_tone_sequences(root / "words", n=12),
    }
    only = set(args.only.split(",")) if args.only else None
    results: dict[str, dict] = {}
    for task, model_type in tm.all_cases():
        if only and model_type not in only:
            continue
        started = time.perf_counter()
        results[f"{task}:{model_type}"] = {**run_case(task, model_type, data, root / model_type), "seconds": 0.0}
        results[f"{task}:{model_type}"]["seconds"] = round(time.perf_counter() - started, 1)
        shutil.rmtree(root / model_type, ignore_errors=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(f"{task}:{model_type}", results[f"{task}:{model_type}"]["outcome"], file=sys.stderr, flush=True)
    counts = collections.Counter(r["outcome"] for r in results.values())
    buildable = len(results) - counts["unbuildable"]
    print(json.dumps({"cases": len(results), "buildable": buildable, **counts}))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
