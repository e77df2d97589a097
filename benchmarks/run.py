"""Benchmark hftl against the plain Hugging Face way (`transformers.Trainer`), side by side in one run.

    python benchmarks/run.py --suite quick                      # tiny models on a CPU, ~10-15 minutes
    python benchmarks/run.py --suite full --cases 'vit-*'       # real sizes, for a GPU
    python benchmarks/run.py --suite quick --list               # the cases

For each case (model x strategy) the two sides alternate, hftl then Trainer, `--repeats` times; every run is
a process of its own (peak memory is per run, and nothing carries over). Medians, the Trainer/hftl speedups
and the targets of the issue go to `--out` (results.md, results.json, a folder per run with its log) and the
table is printed. What is measured and what is not: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/run.py` from a checkout: hftl and benchmarks import from it
    sys.path.insert(0, str(REPO))

from benchmarks import cases as C  # noqa: E402
from benchmarks import report, worker  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(C.SUITES), default="quick", help="quick: tiny models for a CPU; full: real sizes")
    p.add_argument("--cases", nargs="+", metavar="PATTERN", help="case names or shell patterns (vit-*, *-lora); default all")
    p.add_argument("--repeats", type=int, help="runs per side, alternating hftl / Trainer (default: the suite's, 2)")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<suite>-<timestamp>)")
    p.add_argument("--cache", type=Path, default=REPO / "benchmarks" / ".cache", help="where models and data are built")
    p.add_argument("--epochs", type=int, help="override the suite's epochs (at least 2, to see later epochs)")
    p.add_argument("--batch-size", type=int, help="override the suite's batch size")
    p.add_argument("--examples", type=int, nargs=2, metavar=("TRAIN", "VALIDATION"), help="override every data set's size")
    p.add_argument("--threads", type=int, help="torch threads on both sides (default: the suite's; 0 = torch's default)")
    p.add_argument("--num-workers", type=int, help="dataloader workers on both sides")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), help="default: bf16 on a GPU, no on a CPU")
    p.add_argument("--feature-cache", choices=("auto", "on", "off"), default="auto", help="hftl's train.feature_cache")
    p.add_argument(
        "--isolation",
        choices=("auto", "forkserver", "subprocess"),
        default="auto",
        help="forkserver: runs fork from a process that imported everything once (CPU default); "
        "subprocess: a fresh interpreter per run (default with CUDA)",
    )
    p.add_argument(
        "--no-pretraining",
        action="store_true",
        help="quick suite: keep the tiny models random (faster set-up; frozen strategies then learn little)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --out: keep the cases results.json there already holds and run only the others",
    )
    p.add_argument(
        "--budget-minutes",
        type=float,
        help="start no new case after this many minutes (the results so far are written; --resume goes on later): "
        "fits a suite into time-limited sessions",
    )
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    args = p.parse_args(argv)
    if args.epochs is not None and args.epochs < 2:
        p.error("--epochs must be at least 2: the first epoch and the later ones are reported apart")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.resume and not args.out:
        p.error("--resume needs --out, the folder of the results to go on with")
    return args


def _environment(cache: Path) -> None:
    """Offline, quiet, and caches that persist across runs (set before any run or forkserver starts)."""
    os.environ.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_CACHE=str(cache / "hf-datasets"),
        MPLCONFIGDIR=str(cache / "matplotlib"),  # else each fresh process may rebuild matplotlib's font cache
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    if "PYTORCH_NVML_BASED_CUDA_CHECK" not in os.environ:
        # torch.cuda.is_available() in the forkserver must not initialise CUDA. Each run drops it again
        # (worker.execute): without a GPU it makes every such call try to load NVML, once per optimizer step.
        os.environ.update(PYTORCH_NVML_BASED_CUDA_CHECK="1", HFTL_BENCH_NVML_CHECK_SET="1")


class Launcher:
    """Starts one worker per run, as a forkserver child or a fresh interpreter."""

    def __init__(self, isolation: str) -> None:
        self.isolation = isolation
        if isolation == "forkserver":
            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload([*worker.PRELOAD, "benchmarks.worker"])

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        out_dir = Path(spec["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        spec_path = out_dir / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        if self.isolation == "forkserver":
            proc = self.ctx.Process(target=worker.forked, args=(str(spec_path),))
            proc.start()
            proc.join()
            code = proc.exitcode
        else:
            code = subprocess.run([sys.executable, "-m", "benchmarks.worker", str(spec_path)], cwd=REPO).returncode
        result_path = Path(spec["result"])
        if result_path.exists():
            return json.loads(result_path.read_text())
        return {
            "side": spec["side"],
            "case": spec["settings"]["case"],
            "repeat": spec["repeat"],
            "error": f"the worker exited with {code} and wrote no result; see {out_dir / 'log.txt'}",
        }


def _short(r: dict[str, Any]) -> str:
    if "error" in r:
        return "FAILED: " + r["error"].strip().splitlines()[-1][:200]
    epochs = " ".join(f"{s:.2f}" for s in r["epoch_seconds"])
    memory = f"{r['peak_gpu_mb']:.0f} MB GPU" if r.get("peak_gpu_mb") else f"{r['peak_rss_mb']:.0f} MB RSS"
    return f"epochs {epochs} s, accuracy {r['accuracy']:.3f}, peak {memory}, {r['process_seconds']:.0f} s in all"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the suite; returns what results.json holds."""
    args = parse_args(argv)
    suite = C.with_overrides(
        C.SUITES[args.suite],
        epochs=args.epochs,
        batch_size=args.batch_size,
        repeats=args.repeats,
        num_workers=args.num_workers,
        threads=args.threads,
        data_sizes=tuple(args.examples) if args.examples else None,
        pretraining=not args.no_pretraining,
    )
    cases = C.cases_for(suite, args.cases)
    if args.list:
        for case in cases:
            print(f"{case.name:<20} {case.model.task:<22} lr {suite.learning_rates[case.strategy]:g}")
        return {}
    cache = args.cache.resolve()
    _environment(cache)
    import torch

    cuda = torch.cuda.is_available()
    isolation = args.isolation if args.isolation != "auto" else ("subprocess" if cuda else "forkserver")
    precision = args.mixed_precision or ("bf16" if cuda else "no")
    started = time.strftime("%Y%m%d-%H%M%S")
    out = (args.out or REPO / "benchmarks" / "results" / f"{suite.name}-{started}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    from hftl.config import TrainConfig

    has_cache = "feature_cache" in TrainConfig.__dataclass_fields__
    result: dict[str, Any] = {
        "suite": suite.name,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(["run.py", *argv]),
        "cwd": os.getcwd(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": report.machine(),
        "repeats": suite.repeats,
        "isolation": isolation,
        "mixed_precision": precision,
        "feature_cache": args.feature_cache if has_cache else "not in this hftl (train.feature_cache unknown)",
        "suite_settings": {
            "description": suite.description,
            "epochs": suite.epochs,
            "batch_size": suite.batch_size,
            "threads": suite.threads,
            "num_workers": suite.num_workers,
            "learning_rates": suite.learning_rates,
            "data_sizes": suite.data_sizes,
        },
        "cases": {},
        "skipped": {},
        "runs": [],
        "summary": [],
    }
    previous = out / "results.json"
    if args.resume and previous.exists():
        kept = json.loads(previous.read_text())
        if kept["suite"] != suite.name or kept["suite_settings"]["epochs"] != suite.epochs:
            raise SystemExit(f"--resume: {previous} holds suite {kept['suite']!r} with other settings; use another --out")
        for key in ("cases", "runs", "summary", "skipped"):
            result[key] = kept[key]
        result["started"] = kept["started"]
        result["command"] = kept["command"] + " ; " + result["command"]
        print(f"resuming {out}: {len(result['summary'])} case(s) done")
    finished = {s["case"] for s in result["summary"]}
    cases = [c for c in cases if c.name not in finished]
    launcher = Launcher(isolation)
    total = sum(1 for c in cases if not C.model_available(c.model)) * suite.repeats * 2
    done = 0
    clock = time.monotonic()
    for case in cases:
        if args.budget_minutes is not None and time.monotonic() - clock > args.budget_minutes * 60:
            left = [c.name for c in cases if c.name not in {s["case"] for s in result["summary"]}]
            print(f"time budget spent; {len(left)} case(s) left. Go on with --out {out} --resume")
            break
        why = C.model_available(case.model)
        if why:
            result["skipped"][case.name] = why
            print(f"skip {case.name}: {why}")
            continue
        model_dir = C.build_model(case.model, suite, cache)
        data = C.build_data(case.model.data, suite, case.model.image_size, cache)
        settings = C.settings(case, model_dir, data, precision, args.feature_cache)
        result["cases"][case.name] = settings
        runs = []
        for repeat in range(suite.repeats):
            for side in report.SIDES:  # A B A B: drift of the machine's load hits both sides alike
                run_dir = out / "runs" / f"{case.name}-{side}-{repeat + 1}"
                # Both sides of a repeat share a seed; each repeat has its own, so that the accuracy medians
                # average over initialisations and data orders instead of repeating one draw.
                seeded = {**settings, "seed": settings["seed"] + repeat}
                spec = {"side": side, "repeat": repeat + 1, "settings": seeded, "out_dir": str(run_dir)}
                spec["result"] = str(run_dir / "result.json")
                r = launcher.run(spec)
                runs.append(r)
                result["runs"].append(r)
                done += 1
                print(f"[{done}/{total}] {case.name} {side} #{repeat + 1}: {_short(r)}", flush=True)
        result["summary"].append(report.case_summary(case.name, case.strategy, runs))
        _write(out, result)  # after every case: an interrupted suite still leaves its finished cases
    _write(out, result)
    print()
    print(report.markdown_table(result["summary"]))
    print(f"\nresults: {out / 'results.md'} and results.json")
    return result


def _write(out: Path, result: dict[str, Any]) -> None:
    texts = {"results.json": json.dumps(result, indent=1, default=str), "results.md": report.markdown_report(result)}
    for name, text in texts.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


if __name__ == "__main__":
    main()
