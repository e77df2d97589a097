"""An exported ONNX graph on onnxruntime, behind the torch interface hftl's loops and pipelines call.

`OnnxModel` is a `torch.nn.Module` whose `forward(**batch)` runs the onnxruntime session and returns a
`ModelOutput` with `logits` (and the loss of the sequence tasks, whose evaluation reports the model's own
loss), so `evaluate_loop` and a transformers pipeline use it where they would use the PyTorch model: their
pre- and post-processing stay theirs, only the forward pass changes.

Example:
    >>> model = OnnxModel.from_folder("runs/bert-full/onnx")             # doctest: +SKIP
    >>> model(**tokenizer(["a wonderful film"], return_tensors="pt")).logits.shape  # doctest: +SKIP
    torch.Size([1, 2])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers.modeling_outputs import ModelOutput

from hftl.utils.errors import HftlError

INSTALL = 'pip install "hftl[export]"'
GRAPH_FILE, REPORT_FILE = "model.onnx", "export.json"


def require_onnx() -> None:
    """Fail with the pip command when the export extra (onnx, onnxruntime, onnxscript) is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401 - torch.onnx.export(dynamo=True) writes its graphs with it
    except ImportError as e:
        raise HftlError(f"ONNX export and --onnx need onnx, onnxruntime and onnxscript ({e}); install them: {INSTALL}") from e


def graph_path(where: str | Path) -> Path:
    """The graph file of an export folder (`RUN/onnx/`), of a run folder (its `onnx/`), or the file itself."""
    where = Path(where)
    for candidate in (where, where / GRAPH_FILE, where / "onnx" / GRAPH_FILE):
        if candidate.is_file():
            return candidate
    raise HftlError(f"no ONNX graph at {where} (looked for {GRAPH_FILE} and onnx/{GRAPH_FILE}); make one with `hftl export RUN`")


def open_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over `path` (intra-op threads: onnxruntime's default unless given)."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel(torch.nn.Module):
    """An ONNX classification-style graph (inputs in, `logits` out) as a module returning `ModelOutput(logits=...)`.

    `config` is the model's transformers config (labels, threshold, CTC blank); `twin` an optional weightless
    (meta-device) copy of the PyTorch model that lends config-only helpers such as CTC's
    `_get_feat_extract_output_lengths`.
    """

    def __init__(self, path: str | Path, config: Any, task: str, twin: Any = None, threads: int | None = None) -> None:
        super().__init__()
        self.session = open_session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config, self.task, self.path = config, task, Path(path)
        self.main_input_name = self.input_names[0]
        self.__dict__["_twin"] = twin  # not a submodule: it holds no weights and must not be moved or saved
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # gives the module a device and dtype

    @classmethod
    def from_folder(cls, where: str | Path, threads: int | None = None) -> OnnxModel:
        """The graph of an export folder (or run folder, or .onnx file) with the config saved beside it."""
        from transformers import AutoConfig

        path = graph_path(where)
        report = path.parent / REPORT_FILE
        task = json.loads(report.read_text())["task"] if report.is_file() else ""
        config = AutoConfig.from_pretrained(str(path.parent))
        return cls(path, config, task, meta_twin(config, task), threads)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def can_generate(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            twin = self.__dict__.get("_twin")
            if twin is not None and name.startswith("_get_"):  # config-only helpers (frame counts)
                return getattr(twin, name)
            raise

    def forward(self, **inputs: Any) -> ModelOutput:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise HftlError(f"the ONNX graph {self.path} needs inputs {missing}; the processor gave {sorted(inputs)}")
        feeds = {n: inputs[n].detach().cpu().numpy() for n in self.input_names}
        logits = torch.from_numpy(self.session.run(["logits"], feeds)[0])
        labels = inputs.get("labels")
        loss = self._loss(logits, labels, inputs) if labels is not None else None
        device = inputs[self.input_names[0]].device  # back where the batch was (a GPU under hftl evaluate's Accelerator)
        logits, loss = logits.to(device), loss.to(device) if loss is not None else None
        return ModelOutput(loss=loss, logits=logits) if loss is not None else ModelOutput(logits=logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor | None:
        """The sequence tasks' loss as their PyTorch heads compute it (classification losses come from the logits)."""
        labels = labels.cpu()
        if self.task == "token-classification":
            return torch.nn.functional.cross_entropy(logits.flatten(0, -2).float(), labels.flatten(), ignore_index=-100)
        if self.task != "speech-recognition":
            return None
        mask = inputs.get("attention_mask")
        mask = mask.cpu() if mask is not None else torch.ones(inputs[self.main_input_name].shape[:2], dtype=torch.long)
        lengths = self._get_feat_extract_output_lengths(mask.sum(-1)).to(torch.long)
        keep = labels >= 0
        log_probs = torch.nn.functional.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        return torch.nn.functional.ctc_loss(
            log_probs, labels.masked_select(keep), lengths, keep.sum(-1), blank=self.config.pad_token_id,
            reduction=self.config.ctc_loss_reduction, zero_infinity=self.config.ctc_zero_infinity,
        )  # fmt: skip


def meta_twin(config: Any, task: str) -> Any:
    """A weightless copy of the PyTorch model (meta device): its config-only methods, no memory."""
    if task != "speech-recognition":
        return None
    from transformers import AutoModelForCTC

    with torch.device("meta"):
        return AutoModelForCTC.from_config(config)


def onnx_pipeline(task: str, folder: str | Path, model: OnnxModel, batch_size: int | None = None) -> Any:
    """A transformers pipeline of `task` whose forward pass is `model`, with the processor saved in `folder`."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer, pipeline

    folder = str(Path(folder))
    kwargs: dict[str, Any] = {}
    if task in ("text-classification", "token-classification"):
        kwargs["tokenizer"] = AutoTokenizer.from_pretrained(folder)
    elif task == "image-classification":
        kwargs["image_processor"] = AutoImageProcessor.from_pretrained(folder)
    elif task == "automatic-speech-recognition":
        processor = AutoProcessor.from_pretrained(folder)
        kwargs["feature_extractor"], kwargs["tokenizer"] = processor.feature_extractor, processor.tokenizer
    else:
        kwargs["feature_extractor"] = AutoFeatureExtractor.from_pretrained(folder)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(hf_logging.CRITICAL)  # quiet: it logs that OnnxModel is no transformers class it knows
    try:
        return pipeline(task, model=model, batch_size=batch_size, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
