"""`hftl export RUN --format onnx`: for every task hftl trains, the graph gives the PyTorch logits on the run's
validation set (export.json says so), `predict --onnx` and `evaluate --onnx` answer as without it, int8 reports
its metric change, and a graph that disagrees is refused with nothing left behind."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from tests.audio_fixtures import one_thread as one_thread  # noqa: F401 - autouse: one torch thread
from tests.audio_fixtures import tiny_w2v as tiny_w2v  # noqa: F401 - pytest fixtures
from tests.audio_fixtures import tone_classes as tone_classes  # noqa: F401
from tests.audio_fixtures import tone_sequences as tone_sequences  # noqa: F401
from tests.conftest import TEST_EXTRA, require, run_cli
from tests.runs.run_fixtures import TEXT_KINDS, text_case, train, whisper_case

require("onnxruntime", TEST_EXTRA)
require("onnxscript", TEST_EXTRA)


CASES = (*TEXT_KINDS, "image", "audio", "ctc")


@pytest.fixture
def case(request, tmp_path, tiny_bert, tiny_vit, digits, tiny_w2v, tone_classes, tone_sequences):  # noqa: F811
    kind = request.param
    if kind == "image":
        inputs = [str(sorted((digits / "1").iterdir())[0]), str(sorted((digits / "2").iterdir())[0])]
        return kind, train(tmp_path, "image-classification", tiny_vit, digits), digits, inputs
    if kind in ("audio", "ctc"):
        task, data = ("audio-classification", tone_classes) if kind == "audio" else ("speech-recognition", tone_sequences)
        clips = (
            sorted(tone_classes.glob("*/*.wav")) if kind == "audio" else sorted((tone_sequences.parent / "clips").glob("*.wav"))
        )
        return kind, train(tmp_path, task, tiny_w2v, data), data, [str(clips[0]), str(clips[-1])]
    run, data, inputs = text_case(tmp_path, tiny_bert, kind)
    return kind, run, data, inputs


def same_predictions(a: list, b: list) -> None:
    for x, y in zip(a, b, strict=True):
        assert x["input"] == y["input"]
        for p, q in zip(x["predictions"], y["predictions"], strict=True):
            assert {k: v for k, v in p.items() if not isinstance(v, float)} == {
                k: v for k, v in q.items() if not isinstance(v, float)
            }
            assert [v for v in p.values() if isinstance(v, float)] == pytest.approx(
                [v for v in q.values() if isinstance(v, float)], abs=1e-5
            )


@pytest.mark.parametrize("case", CASES, indirect=True)
def test_export_is_equal_to_pytorch_and_predict_and_evaluate_agree(case):
    kind, run, data, inputs = case
    out = run_cli("export", str(run), "--format", "onnx", in_process=True)
    assert "written:" in out.stdout
    folder = run / "onnx"
    assert {"model.onnx", "export.json", "config.json"} <= {p.name for p in folder.iterdir()}
    report = json.loads((folder / "export.json").read_text())
    fp32 = report["fp32"]
    assert fp32["max_abs_logit_diff"] <= fp32["allowed_diff"] and fp32["label_agreement"] == 1.0
    assert fp32["metrics_onnx"] == pytest.approx(fp32["metrics_torch"], abs=1e-6) and report["validation_examples"] > 0

    plain = json.loads(run_cli("predict", str(run), *inputs, "--json", in_process=True).stdout)
    onnx = json.loads(run_cli("predict", str(run), *inputs, "--json", "--onnx", in_process=True).stdout)
    same_predictions(plain, onnx)
    before = json.loads(run_cli("evaluate", str(run), "--data", str(data), in_process=True).stdout)
    after = json.loads(run_cli("evaluate", str(run), "--data", str(data), "--onnx-path", str(folder), in_process=True).stdout)
    assert after == pytest.approx(
        before, rel=1e-3, abs=1e-5
    )  # the loss too: the sequence tasks' loss is computed beside the graph


def test_int8_reports_its_metric_change(tiny_bert, tmp_path, caplog):
    run, _, inputs = text_case(tmp_path, tiny_bert, "text")
    with caplog.at_level(logging.WARNING):
        out = run_cli("export", str(run), "--quantize", "int8", "--output", str(tmp_path / "int8"), in_process=True)
    # onnxruntime's advice to pre-process (logged on every quantize_dynamic) is not passed on: the change is measured
    assert not [r for r in caplog.records if "pre-processing before quantization" in r.getMessage()]
    report = json.loads((tmp_path / "int8" / "export.json").read_text())
    int8 = report["int8"]
    metric = report["metric"]
    assert report["quantize"] == "int8" and "int8:" in out.stdout
    assert int8["metric_change"] == pytest.approx(int8["metrics_onnx"][metric] - int8["metrics_torch"][metric])
    assert 0 < int8["max_abs_logit_diff"] < 0.1  # int8 changes logits, a little
    onnx = json.loads(
        run_cli("predict", str(run), *inputs, "--json", "--onnx-path", str(tmp_path / "int8"), in_process=True).stdout
    )
    assert [len(o["predictions"]) for o in onnx] == [1, 1]


def test_a_graph_that_disagrees_is_refused_and_nothing_is_left(tiny_bert, tmp_path, monkeypatch):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from hftl.runs import onnx_export

    run, _, _ = text_case(tmp_path, tiny_bert, "text")
    real = onnx_export.export_graph

    def planted(model, example, path):  # a graph one weight off: what a faulty exporter would write
        real(model, example, path)
        graph = onnx.load(str(path))
        big = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        weights = numpy_helper.to_array(big)  # noise, not a shift: LayerNorm would cancel a constant shift
        noise = np.random.default_rng(0).normal(0, 0.05, weights.shape).astype(weights.dtype)
        big.CopyFrom(numpy_helper.from_array(weights + noise, big.name))
        onnx.save(graph, str(path))

    monkeypatch.setattr(onnx_export, "export_graph", planted)
    refused = run_cli("export", str(run), in_process=True, check=False)
    assert refused.returncode != 0 and "disagrees with the PyTorch model" in refused.stderr
    assert not (run / "onnx").exists() and not list(run.glob(".onnx.tmp-*"))


def test_a_whisper_run_is_refused_with_its_reason_and_nothing_is_written(tmp_path):
    """Whisper generates token by token (encoder plus a decoder run once per token): one logits graph cannot serve
    it, so `hftl export` says so and why, and leaves the run folder as it was."""
    run, _ = whisper_case(tmp_path / "whisper")
    before = sorted(run.rglob("*"))
    for output in ([], ["--output", str(tmp_path / "elsewhere")]):
        refused = run_cli("export", str(run), "--format", "onnx", *output, in_process=True, check=False)
        assert refused.returncode != 0, refused.stdout
        assert "encoder-decoder (whisper) generates token by token, which one logits graph cannot do" in refused.stderr
        assert "hftl predict" in refused.stderr  # and what to do instead
    assert sorted(run.rglob("*")) == before and not (tmp_path / "elsewhere").exists()


def test_without_the_extra_the_error_names_the_pip_command(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    refused = run_cli("export", str(tmp_path), in_process=True, check=False)
    assert refused.returncode != 0 and 'pip install "hftl[export]"' in refused.stderr
