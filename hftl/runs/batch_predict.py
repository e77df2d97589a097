"""`hftl predict RUN --data SOURCE --output FILE`: a finished run's predictions for a whole data set, into a file.

The source is read as training reads it (folders, tables, Hub ids with their config and split). Rows go
through the run's pipeline in chunks; under `accelerate launch` each process takes every n-th chunk and
writes its own part file, and the main process merges the parts in row order, so no row is written twice
and memory stays flat whatever the size. An input that cannot be read becomes a row with its `error`,
never a silent gap.

Example:
    >>> predict_file("runs/vit-lora", "photos/", Path("preds.csv"))   # doctest: +SKIP
    PosixPath('preds.csv')
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from accelerate import PartialState
from tqdm.auto import tqdm

from hftl.data.dataset_repos import RepoOptions
from hftl.data.sources import DataReport, inference_split, load_source
from hftl.runs.inference import Predictor
from hftl.utils.errors import DataError, HftlError

FORMATS = (".csv", ".jsonl", ".parquet")


def predict_file(
    run_dir: str | Path,
    data: str,
    output: Path,
    batch_size: int = 32,
    top_k: int | None = None,
    repo: RepoOptions | None = None,
    split: str | None = None,
) -> Path:
    """Predict every row of `data` with the run's model; write `output` (csv, jsonl or parquet)."""
    if output.suffix.lower() not in FORMATS:
        raise HftlError(f"--output {output}: write .csv, .jsonl or .parquet")
    import torch

    state = PartialState(cpu=not torch.cuda.is_available())  # several processes on CPUs too (gloo)
    predictor = Predictor(run_dir, batch_size=batch_size, device=state.device)  # each process on its own GPU
    predictor.check_top_k(top_k)
    ds, column = _source(predictor, data, repo or RepoOptions(), split)
    output.parent.mkdir(parents=True, exist_ok=True)
    part = _part(output, state.process_index)
    chunks = range(0, len(ds), batch_size)
    mine = [start for i, start in enumerate(chunks) if i % state.num_processes == state.process_index]
    with part.open("w") as f, tqdm(total=len(ds), desc="predict", disable=not state.is_local_main_process) as bar:
        for start in mine:
            rows = ds[start : start + batch_size]
            for record in _predict_chunk(predictor, rows[column], start, top_k):
                f.write(json.dumps(record) + "\n")
            bar.update(min(batch_size, len(ds) - start) * state.num_processes)
    state.wait_for_everyone()
    if state.is_main_process:
        parts = [_part(output, r) for r in range(state.num_processes)]
        _write(output, _merged(parts, batch_size))
        for p in parts:
            p.unlink()
    state.wait_for_everyone()
    return output


def _part(output: Path, rank: int) -> Path:
    return output.with_name(f".{output.name}.part{rank}.jsonl")


def _source(predictor: Predictor, data: str, repo: RepoOptions, split: str | None) -> tuple[Any, str]:
    """The rows to predict and their input column (labels, if any, are not needed)."""
    modality, cfg = predictor.modality, predictor.modality.cfg
    ds = inference_split(load_source(data, modality, "--data", DataReport(), repo), data, split)
    column = cfg.data.input_column or modality.detect_input_column(ds, data)
    if len(ds) == 0:
        raise DataError(f"--data {data} holds no rows to predict")
    return modality.prepare_inputs(ds, column, data), column


def _predict_chunk(predictor: Predictor, values: list[Any], start: int, top_k: int | None) -> Iterator[dict[str, Any]]:
    """One record per value: the prediction, or the error that kept it from one."""
    loaded, errors = [], {}
    for i, value in enumerate(values):
        try:
            text = " ".join(value) if isinstance(value, list) else value  # token lists are tagged as one sentence
            if text is None:
                raise DataError("no input in this row")
            loaded.append(predictor.modality.load_predict_input(text))
        except (DataError, OSError, ValueError) as e:
            errors[i] = str(e).splitlines()[0][:300]
    if predictor.modality.label_shapes and predictor.problem not in ("regression", "multi_label_classification"):
        top_k = top_k or len(predictor.order)  # a file gets every label's score, not the best one alone
    outputs = iter(predictor(loaded, top_k) if loaded else [])
    for i, value in enumerate(values):
        record = {"row": start + i + 1, "input": value if not isinstance(value, list) else " ".join(value)}
        if i in errors:
            yield {**record, "prediction": None, "score": None, "error": errors[i]}
        else:
            yield {**record, **_summary(next(outputs)), "error": None}


def _summary(out: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline prediction and score, and the full output (every label's score, values, entities)."""
    if out and "text" in out[0]:  # speech recognition
        return {"prediction": out[0]["text"], "score": None, "details": None}
    if out and "value" in out[0]:  # regression
        return {"prediction": out[0]["value"] if len(out) == 1 else None, "score": None, "details": out}
    if out and "entity_group" in out[0] or not out:  # tags: the entities found
        return {"prediction": " ".join(f"{e['word']} [{e['entity_group']}]" for e in out), "score": None, "details": out}
    if "predicted" in out[0]:  # multi-label: the labels over the threshold
        chosen = [o["label"] for o in out if o["predicted"]]
        return {"prediction": "|".join(chosen), "score": None, "details": out}
    return {"prediction": out[0]["label"], "score": out[0]["score"], "details": out}


def _merged(parts: list[Path], batch_size: int) -> Iterator[dict[str, Any]]:
    """The parts' records in row order: chunk i came from process i mod n."""
    files = [p.open() for p in parts]
    try:
        while True:
            moved = False
            for f in files:
                for _ in range(batch_size):
                    line = f.readline()
                    if not line:
                        break
                    moved = True
                    yield json.loads(line)
            if not moved:
                return
    finally:
        for f in files:
            f.close()


def _write(output: Path, records: Iterator[dict[str, Any]]) -> None:
    """Stream records into csv (details as JSON text), jsonl or parquet (row groups of 10,000)."""
    suffix = output.suffix.lower()
    tmp = output.with_name(f".{output.name}.tmp")
    if suffix == ".jsonl":
        with tmp.open("w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
    elif suffix == ".csv":
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["row", "input", "prediction", "score", "details", "error"])
            writer.writeheader()
            for r in records:
                writer.writerow({**r, "details": json.dumps(r.get("details")) if r.get("details") is not None else ""})
    else:
        _write_parquet(tmp, records)
    tmp.replace(output)


def _write_parquet(path: Path, records: Iterator[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("row", pa.int64()), ("input", pa.string()), ("prediction", pa.string()), ("score", pa.float64()),
         ("details", pa.string()), ("error", pa.string())]
    )  # fmt: skip
    with pq.ParquetWriter(str(path), schema) as writer:
        batch: list[dict[str, Any]] = []
        for r in records:
            text = {k: None if r.get(k) is None else str(r[k]) for k in ("input", "prediction")}
            details = json.dumps(r["details"]) if r.get("details") is not None else None
            batch.append({**r, **text, "details": details})
            if len(batch) == 10_000:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
