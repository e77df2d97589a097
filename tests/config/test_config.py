"""Config: YAML + overrides in, validated dataclasses out, refusals that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hftl.config import STRATEGIES, Config, load_config
from hftl.utils.errors import ConfigError
from tests.conftest import REPO

CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "accelerate")  # those are Accelerate's
BASE = {"model": {"name_or_path": "some/model"}, "data": {"train": "data/"}}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def refused(overrides, source=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(BASE if source is None else source, overrides)
    return str(info.value)


# --- loading and overrides -------------------------------------------------------------------------


def test_yaml_and_dotted_overrides(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "train": {"epochs": 5, "batch_size": 4}, "strategy": {"name": "freeze"}})
    cfg = load_config(path, ["train.epochs=3", "strategy.trainable_blocks=1"])
    assert isinstance(cfg, Config)
    assert (cfg.train.epochs, cfg.train.batch_size) == (3, 4)  # override wins, the rest of the file stays
    assert (cfg.strategy.name, cfg.strategy.trainable_blocks) == ("freeze", 1)
    assert cfg.model.name_or_path == "some/model"


def test_short_unique_keys_and_section_shorthand():
    cfg = load_config(BASE, ["epochs=3", "learning_rate=0.001", "strategy=lora", "model=other/model", "r=4"])
    assert cfg.train.epochs == 3
    assert cfg.train.learning_rate == pytest.approx(1e-3)
    assert cfg.strategy.name == "lora"
    assert cfg.model.name_or_path == "other/model"
    assert cfg.strategy.lora.r == 4


def test_python_dict_overrides_keep_their_types():
    cfg = load_config(BASE, {"train.epochs": 2, "strategy": "head_only", "train.max_steps": None, "augment": False})
    assert (cfg.train.epochs, cfg.strategy.name, cfg.train.max_steps, cfg.data.augment) == (2, "head_only", None, False)


def test_scientific_notation_is_a_float(tmp_path):
    # YAML 1.1 reads `5e-5` (no dot) as a string; hftl takes it as the number everyone means.
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name_or_path: m\ndata:\n  train: d\ntrain:\n  learning_rate: 5e-5\n  head_learning_rate: 1e-3\n")
    cfg = load_config(path, ["train.weight_decay=1e-4"])
    assert cfg.train.learning_rate == pytest.approx(5e-5) and isinstance(cfg.train.learning_rate, float)
    assert cfg.train.head_learning_rate == pytest.approx(1e-3)
    assert cfg.train.weight_decay == pytest.approx(1e-4)


@pytest.mark.parametrize("text", ["null", "None", "~"])
def test_null_for_optional_keys(text):
    cfg = load_config(BASE, [f"train.max_steps={text}", f"train.max_grad_norm={text}", f"data.validation={text}"])
    assert (cfg.train.max_steps, cfg.train.max_grad_norm, cfg.data.validation) == (None, None, None)


def test_null_for_a_required_key_is_refused():
    message = refused({"strategy.batch_norm": None})
    assert "strategy.batch_norm" in message and "null" in message


def test_modality_aliases_and_task_metrics():
    cfg = load_config(BASE, ["task=text-classification", "text_column=review", "data.tags_column=stars"])
    assert (cfg.data.input_column, cfg.data.label_column) == ("review", "stars")
    cfg = load_config({**BASE, "data": {"train": "d", "transcript_column": "sentence"}})
    assert cfg.data.label_column == "sentence"
    assert "use one of wer, cer, loss" in refused({"task": "speech-recognition", "train.metric_for_best": "f1"})
    assert "text_pair_column is for task text-classification" in refused({"data.text_pair_column": "b"})


def test_two_keys_setting_one_value_are_refused_naming_both(tmp_path):
    speech = {**BASE, "task": "speech-recognition"}
    # In speech recognition text_column is the transcript, as in the transformers speech examples.
    cfg = load_config(speech, ["data.audio_column=audio", "data.text_column=transcript"])
    assert (cfg.data.input_column, cfg.data.label_column) == ("audio", "transcript")
    cfg = load_config(BASE, ["task=speech-recognition", "text_column=transcript"])  # the override's task counts
    assert cfg.data.label_column == "transcript" and cfg.data.input_column is None
    with pytest.raises(ConfigError, match="'epochs' and 'train.epochs' both set train.epochs in the overrides"):
        load_config(BASE, ["epochs=3", "train.epochs=4"])
    with pytest.raises(ConfigError, match="'data.transcript_column' and 'data.text_column' both set data.label_column"):
        load_config(speech, ["data.transcript_column=a", "data.text_column=b"])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "data": {"train": "d", "audio_column": "a", "input_column": "b"}}))
    with pytest.raises(ConfigError, match=f"'data.audio_column' and 'data.input_column' both set data.input_column in {path}"):
        load_config(path)
    # An override still replaces what the file says: one key per source.
    path.write_text(yaml.safe_dump({**BASE, "train": {"epochs": 5}}))
    assert load_config(path, ["epochs=2"]).train.epochs == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("query,value", ["query", "value"]),
        ("query, value", ["query", "value"]),
        ("[query, value]", ["query", "value"]),
        ("[query]", ["query"]),
        ("auto", "auto"),
        ("[qv]_proj", "[qv]_proj"),  # a regex stays one string
    ],
    ids=["comma", "comma-space", "brackets", "one-in-brackets", "auto", "regex"],
)
def test_lora_target_modules_from_the_command_line(text, expected):
    assert load_config(BASE, [f"strategy.lora.target_modules={text}"]).strategy.lora.target_modules == expected


def test_lora_target_modules_list_in_yaml(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "strategy": {"name": "lora", "lora": {"target_modules": ["query", "value"]}}})
    assert load_config(path).strategy.lora.target_modules == ["query", "value"]


# --- refusals --------------------------------------------------------------------------------------


def test_unknown_dotted_key_suggests_and_lists_allowed():
    message = refused(["train.epoch=3"])
    assert "'train.epoch'" in message
    assert "did you mean 'train.epochs'" in message.lower()
    assert "epochs, max_steps, batch_size" in message  # the allowed keys of the section


def test_unknown_short_key_suggests_the_full_key():
    message = refused(["epoch=3"])
    assert "'epoch'" in message and "did you mean 'train.epochs'" in message.lower()


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = write_yaml(tmp_path / "mine.yaml", {**BASE, "train": {"epoch": 3}})
    message = refused(None, source=path)
    assert "train.epoch" in message and str(path) in message and "train.epochs" in message


def test_unknown_section_in_yaml(tmp_path):
    path = write_yaml(tmp_path / "mine.yaml", {**BASE, "trian": {"epochs": 3}})
    message = refused(None, source=path)
    assert "'trian'" in message and "'train'" in message and str(path) in message


def test_bad_type_in_yaml_names_key_and_file(tmp_path):
    path = write_yaml(tmp_path / "mine.yaml", {**BASE, "train": {"epochs": "many"}})
    message = refused(None, source=path)
    assert "train.epochs" in message and "integer" in message and str(path) in message


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("strategy.name=bogus", STRATEGIES),
        ("train.scheduler=x", ("linear", "cosine", "constant")),
        ("train.mixed_precision=fp8", ("no", "fp16", "bf16")),
        ("strategy.batch_norm=sometimes", ("freeze_stats", "train")),
        ("data.on_bad_file=ignore", ("skip", "error")),
        ("task=translation", ("image-classification",)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_choice_names_the_allowed_values(override, allowed):
    message = refused([override])
    assert override.split("=")[0] in message
    assert all(choice in message for choice in allowed)
    assert repr(override.split("=")[1]) in message


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.learning_rate=fast", "train.learning_rate"),
        ("data.augment=maybe", "data.augment"),
        ("strategy.lora.r=1.5", "strategy.lora.r"),
    ],
)
def test_bad_type_names_the_key(override, key):
    message = refused([override])
    assert key in message and repr(override.split("=")[1]) in message


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["train.epochs=2", "strategy.head_warmup_epochs=2"], ["strategy.head_warmup_epochs", "train.epochs"]),
        (["strategy=head_only", "strategy.head_warmup_epochs=1"], ["head_warmup_epochs", "head_only"]),
        (["resume=true", "overwrite=true"], ["resume", "overwrite"]),
        (["train.batch_size=0"], ["train.batch_size", ">= 1"]),
        (["data.validation_split=1.5"], ["data.validation_split"]),
    ],
    ids=["warmup>=epochs", "warmup+head_only", "resume+overwrite", "batch_size", "validation_split"],
)
def test_cross_field_and_range_checks(overrides, words):
    message = refused(overrides)
    assert all(w in message for w in words), message


def test_missing_required_keys_say_what_to_pass():
    assert "model.name_or_path is required" in refused(None, source={"data": {"train": "d"}})
    assert "data.train is required" in refused(None, source={"model": {"name_or_path": "m"}})


def test_malformed_override_and_missing_file(tmp_path):
    assert "key=value" in refused(["epochs"])
    message = refused(None, source=tmp_path / "nope.yaml")
    assert "nope.yaml" in message and "does not exist" in message


# --- resolved config -------------------------------------------------------------------------------


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(
        BASE,
        ["strategy=lora", "target_modules=query,value", "learning_rate=5e-5", "max_steps=7", "head_learning_rate=null"],
    )
    cfg.save(tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again.to_dict() == cfg.to_dict()
    assert again.strategy.lora.target_modules == ["query", "value"]


# --- configs/ ------------------------------------------------------------------------------------


def test_configs_exist():
    assert CONFIGS, "configs/ holds no YAML files; each (model, strategy) pair needs one"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_every_config_loads_and_names_its_command(path):
    cfg = load_config(path)
    assert cfg.model.name_or_path and cfg.data.train
    first = path.read_text().splitlines()[0]
    relative = path.relative_to(REPO).as_posix()
    assert first.startswith("#"), f"{relative} must start with a comment giving the command that runs it"
    commands = (f"hftl train {relative}", f"hftl compare {relative}")  # a study config names the study it runs
    assert any(c in first for c in commands), f"{relative}: first line should say `hftl train {relative} ...`, got {first!r}"


ACCELERATE_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_configs_load_in_accelerate(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type.value in ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED") and config.mixed_precision == "bf16"
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and f"accelerate launch --config_file configs/accelerate/{path.name}" in first


def launcher_env(path: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file PATH` gives the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "hftl.cli", "train", "c.yaml"])
    args, defaults, _ = _validate_launch_command(args)
    if not args.use_deepspeed:
        return prepare_multi_gpu_env(args)
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command sets it
    return prepare_deepspeed_cmd_env(args)[1]


def test_fsdp_config_builds_accelerates_fsdp2_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import StateDictType

    for key, value in launcher_env(REPO / "configs" / "accelerate" / "fsdp.yaml").items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()  # reads and checks the launcher's FSDP_* variables
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type == StateDictType.FULL_STATE_DICT and plugin.auto_wrap_policy is not None


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_build_accelerates_deepspeed_plugin(stage, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    for key, value in launcher_env(REPO / "configs" / "accelerate" / f"deepspeed_zero{stage}.yaml").items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()  # the DeepSpeed config Accelerate would hand to deepspeed.initialize
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage and zero["offload_optimizer"]["device"] == "none"
    assert zero["stage3_gather_16bit_weights_on_model_save"] is False  # hftl gathers the fp32 masters itself
    assert plugin.zero3_init_flag is False  # hftl loads the pretrained model whole, ZeRO-3 partitions it at prepare
    # Left for hftl to fill from train.gradient_accumulation_steps and train.max_grad_norm (tests/backends/test_deepspeed.py).
    ds = plugin.deepspeed_config
    assert ds["gradient_accumulation_steps"] == ds["gradient_clipping"] == ds["train_micro_batch_size_per_gpu"] == "auto"
