"""Start-up against data size: how long until a run has trained, for 1k / 10k / 100k images or clips, and its peak memory.

For each size, in fresh processes: the plain `datasets.load_dataset("imagefolder" | "audiofolder")` (an
empty datasets cache), hftl's first run (nothing remembered: every input is checked once, in parallel),
hftl's re-run (the verdicts remembered by path, size and time) and hftl with `data.check_inputs=off`
(the floor: imports, model, one step, one validation pass). hftl runs one head_only step of a tiny model
with the feature cache off, a fixed head rate (no range test) and a fixed validation folder of 200 inputs for
every size, so what grows with the size is start-up, not the validation pass.

    python benchmarks/startup.py --sizes 1000,10000,100000 --root /tmp/hftl-startup
    python benchmarks/startup.py --modality audio --sizes 1000,10000 --root /tmp/hftl-startup

Results go to stdout as a Markdown table (copied into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VALIDATION = 200  # inputs in the fixed validation folder


def write_images(folder: Path, n: int, seed: int = 0) -> Path:
    """`n` 320x240 JPEGs in 10 class folders (kept between runs of this script)."""
    import numpy as np
    from PIL import Image

    marker = folder / ".complete"
    if marker.exists():
        return folder
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for i in range(n):
        label = folder / f"class{i % 10}"
        label.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(0, 40, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(base + noise).save(label / f"{i}.jpg", quality=85)
    marker.write_text("")
    return folder


def write_clips(folder: Path, n: int, seed: int = 0) -> Path:
    """`n` one-second 16 kHz WAVs (a tone per class, noise) in 10 class folders (kept between runs)."""
    import numpy as np
    import soundfile as sf

    marker = folder / ".complete"
    if marker.exists():
        return folder
    rng = np.random.default_rng(seed)
    t = np.arange(16_000) / 16_000
    for i in range(n):
        label = folder / f"class{i % 10}"
        label.mkdir(parents=True, exist_ok=True)
        x = 0.3 * np.sin(2 * np.pi * 200 * (1 + i % 10) * t) + rng.normal(0, 0.02, t.size)
        sf.write(label / f"{i}.wav", x.astype(np.float32), 16_000)
    marker.write_text("")
    return folder


def tiny_vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    if not (folder / "config.json").exists():
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64)  # fmt: skip
        ViTForImageClassification(config).save_pretrained(folder)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def tiny_wav2vec2(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if not (folder / "config.json").exists():
        config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                conv_dim=(32, 32, 32), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8),
                                num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4, classifier_proj_size=16)  # fmt: skip
        Wav2Vec2Model(config).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(sampling_rate=16_000, return_attention_mask=True).save_pretrained(folder)
    return folder


MODALITIES = {  # writer, model, config, datasets builder
    "image": (write_images, tiny_vit, "configs/vision/vit-head-only.yaml", "imagefolder"),
    "audio": (write_clips, tiny_wav2vec2, "configs/audio/wav2vec2-head-only.yaml", "audiofolder"),
}


def timed(cmd: list[str], env: dict[str, str], may_fail: bool = False) -> tuple[float, float] | str:
    """Wall seconds and peak resident MiB of one process (`may_fail`: the last line of its error instead)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        error = proc.stderr.read().decode()
        if may_fail:  # datasets' audiofolder encodes clips with torchcodec, which fails to load on some machines
            lines = error.splitlines()
            cause = [line for line in lines if line.startswith("ImportError")] or [line for line in lines if "Error" in line]
            return (cause[-1] if cause else "failed")[:100]
        raise SystemExit(f"failed: {' '.join(cmd)}\n{error[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def measure(modality: str, n: int, root: Path) -> dict[str, tuple[float, float]]:
    """(seconds, peak MiB) of the plain load, hftl's first run, its re-run and its run with the checks off."""
    write, tiny, config, builder = MODALITIES[modality]
    model = tiny(root / f"tiny-{modality}-model")
    data = write(root / f"{modality}-{n}", n)
    validation = write(root / f"{modality}-validation-{VALIDATION}", VALIDATION, seed=1)
    fresh = Path(tempfile.mkdtemp(prefix="startup-", dir=root))
    load = f"import datasets; datasets.load_dataset({builder!r}, data_dir={str(data)!r}, split='train')"
    hftl = [sys.executable, "-m", "hftl.cli", "train", str(REPO / config), f"model={model}", f"data.train={data}"]
    hftl += [f"data.validation={validation}", "train.max_steps=1", "train.epochs=1", "train.report_to=none"]
    hftl += ["train.feature_cache=off", "train.head_learning_rate=1e-3"]  # start-up only: no range test before the step
    env = {"HF_DATASETS_CACHE": str(fresh / "datasets"), "HFTL_FEATURE_CACHE": str(fresh / "hftl" / "features"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
    try:
        return {
            "plain": timed([sys.executable, "-c", load], env, may_fail=True),
            "first": timed([*hftl, f"output_dir={fresh / 'run1'}"], env),
            "again": timed([*hftl, f"output_dir={fresh / 'run2'}"], env),
            "off": timed([*hftl, f"output_dir={fresh / 'run3'}", "data.check_inputs=off"], env),
        }
    finally:
        shutil.rmtree(fresh, ignore_errors=True)  # the caches and runs; the generated data stays for the next time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", choices=sorted(MODALITIES), default="image")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "hftl-startup"))
    args = parser.parse_args()
    root = Path(args.root)
    rows = [
        f"| {args.modality} inputs | plain load_dataset | hftl first run | hftl re-run | hftl, checks off | "
        "peak MiB (plain / first / re-run / off) |",
        "|---|---|---|---|---|---|",
    ]
    for n in (int(s) for s in args.sizes.split(",")):
        m = measure(args.modality, n, root)
        keys = ("plain", "first", "again", "off")
        seconds = " | ".join(f"{m[k][0]:.1f} s" if isinstance(m[k], tuple) else f"fails: {m[k]}" for k in keys)
        peaks = " / ".join(f"{m[k][1]:.0f}" if isinstance(m[k], tuple) else "-" for k in keys)
        rows.append(f"| {n:,} | {seconds} | {peaks} |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
