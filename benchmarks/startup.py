"""Start-up against data size: how long until a run has trained, for 1k / 10k / ... JPEGs, and its peak memory.

For each size, in fresh processes: the plain `datasets.load_dataset("imagefolder")` (an empty datasets cache),
hftl's first run (nothing remembered: every image is decoded once, in parallel) and hftl's re-run (the
verdicts remembered by path, size and time). hftl runs one head_only step of a tiny ViT with the feature
cache off, so the numbers are start-up and one validation pass, not training.

    python benchmarks/startup.py --sizes 1000,10000 --root /tmp/hftl-startup

Results go to stdout as a Markdown table (copied into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, n: int) -> Path:
    """`n` 320x240 JPEGs in 10 class folders (kept between runs of this script)."""
    import numpy as np
    from PIL import Image

    marker = folder / ".complete"
    if marker.exists():
        return folder
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    for i in range(n):
        label = folder / f"class{i % 10}"
        label.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(0, 40, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(base + noise).save(label / f"{i}.jpg", quality=85)
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


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "hftl-startup"))
    args = parser.parse_args()
    root = Path(args.root)
    model = tiny_vit(root / "tiny-vit")
    rows = [
        "| images | plain load_dataset | hftl first run | hftl re-run | peak MiB (plain / first / re-run) |",
        "|---|---|---|---|---|",
    ]
    for n in (int(s) for s in args.sizes.split(",")):
        data = write_images(root / f"images-{n}", n)
        fresh = Path(tempfile.mkdtemp(prefix="startup-", dir=root))
        plain = [
            sys.executable,
            "-c",
            f"import datasets; datasets.load_dataset('imagefolder', data_dir={str(data)!r}, split='train')",
        ]
        hftl = [sys.executable, "-m", "hftl.cli", "train", str(REPO / "configs/vision/vit-head-only.yaml"), f"model={model}"]
        hftl += [f"data.train={data}", "train.max_steps=1", "train.epochs=1", "train.report_to=none", "train.feature_cache=off"]
        env = {"HF_DATASETS_CACHE": str(fresh / "datasets"), "HFTL_FEATURE_CACHE": str(fresh / "hftl" / "features"),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}  # fmt: skip
        p = timed(plain, env)
        first = timed([*hftl, f"output_dir={fresh / 'run1'}"], env)
        again = timed([*hftl, f"output_dir={fresh / 'run2'}"], env)
        rows.append(
            f"| {n:,} | {p[0]:.1f} s | {first[0]:.1f} s | {again[0]:.1f} s | {p[1]:.0f} / {first[1]:.0f} / {again[1]:.0f} |"
        )
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
