"""CPU speed of a finished run: PyTorch against its ONNX graph on onnxruntime, fp32 and int8 (docs/guides/serve.md).

Latency is one input per call (median of `--repeats` calls after warm-up); throughput is inputs per second in
batches of 32 (the median batch). The inputs are the run's own validation examples, processed once outside the
timing: only the forward pass is timed. Each engine gets `--threads` intra-op threads. Needs `hftl export RUN`
first (fp32 in RUN/onnx, int8 in RUN/onnx-int8; missing ones are exported here).

Example:
    $ nice python benchmarks/onnx_speed.py runs/digits-lite0 runs/minilm-vader --threads 2 --output table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def batches(run_dir: Path, size: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One batch of 1 and one of `size` validation inputs, as the run's collator makes them."""
    from hftl.data.modalities import get_modality
    from hftl.run_folder.layout import load_run
    from hftl.runs.onnx_export import validation_data

    cfg, model_dir = load_run(run_dir)
    modality = get_modality(cfg.task, cfg, str(model_dir))
    processor = modality.load_processor(str(model_dir), None, False)
    loader, _ = validation_data(cfg, modality, processor, run_dir, size)
    big = {k: v for k, v in next(iter(loader)).items() if k != "labels"}
    return {k: v[:1] for k, v in big.items()}, big


def timed(call: Any, batch: dict[str, torch.Tensor], repeats: int) -> float:
    """Median seconds of `call(**batch)` over `repeats` calls, after 3 warm-up calls."""
    with torch.no_grad():
        for _ in range(3):
            call(**batch)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call(**batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(run_dir: Path, threads: int, repeats: int) -> list[dict[str, Any]]:
    from hftl.data.modalities import get_modality
    from hftl.run_folder.layout import load_run
    from hftl.runs.onnx_export import export_onnx
    from hftl.runs.onnx_runtime import OnnxModel

    torch.set_num_threads(threads)
    cfg, model_dir = load_run(run_dir)
    one, many = batches(run_dir, 32)
    engines: dict[str, Any] = {"PyTorch": get_modality(cfg.task, cfg).model_class().from_pretrained(str(model_dir)).eval()}
    for name, folder, quantize in (("onnxruntime fp32", "onnx", None), ("onnxruntime int8", "onnx-int8", "int8")):
        if not (run_dir / folder / "export.json").is_file():
            export_onnx(run_dir, run_dir / folder, quantize)
        engines[name] = OnnxModel.from_folder(run_dir / folder, threads=threads)
    fp32 = json.loads((run_dir / "onnx" / "export.json").read_text())
    int8 = json.loads((run_dir / "onnx-int8" / "export.json").read_text())
    metric = fp32["metric"]
    scores = {
        "PyTorch": fp32["fp32"]["metrics_torch"][metric], "onnxruntime fp32": fp32["fp32"]["metrics_onnx"][metric],
        "onnxruntime int8": int8["int8"]["metrics_onnx"][metric],
    }  # fmt: skip
    rows = []
    for name, model in engines.items():
        latency = timed(model, one, repeats)
        throughput = len(next(iter(many.values()))) / timed(model, many, max(3, repeats // 5))
        size = (
            sum(p.stat().st_size for p in (run_dir / "model").glob("*.safetensors"))
            if name == "PyTorch"
            else model.path.stat().st_size
        )
        rows.append({
            "run": run_dir.name, "model": cfg.model.name_or_path, "engine": name, "latency_ms": latency * 1000,
            "throughput": throughput, "metric": metric, "score": scores[name], "size_mb": size / 1e6,
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]], threads: int) -> str:
    lines = [
        "| model | engine | latency, batch 1 (ms) | throughput, batch 32 (inputs/s) | validation metric | weights (MB) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['engine']} | {r['latency_ms']:.1f} | {r['throughput']:.0f} | "
            f"{r['metric']} {r['score']:.4f} | {r['size_mb']:.1f} |"
        )
    return "\n".join(lines) + f"\n\n{threads} CPU thread(s) per engine; median of repeated calls.\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls at batch 1 (batch 32: a fifth)")
    parser.add_argument("--output", type=Path, default=None, help="write the markdown table here too")
    args = parser.parse_args(argv)
    rows = [row for run in args.runs for row in measure(run, args.threads, args.repeats)]
    text = table(rows, args.threads)
    print(text)
    if args.output:
        args.output.write_text(text)
        args.output.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
