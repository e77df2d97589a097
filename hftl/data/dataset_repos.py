"""Hub datasets and local folders laid out like them: a config (subset), a revision, and split names with slices.

`datasets.load_dataset("glue")` fails without a config, and a Hub dataset's splits are not always
called train / validation / test. `load_repo` passes `data.dataset_config` and `data.revision`;
`select_split` takes a split name or a slice in the `datasets` syntax (`train[:90%]`,
`train[:80%]+validation`), each refusal naming the key and what the dataset has. A local folder with a
README whose metadata lists `configs:` is read the same way, which is how the tests stay offline.

Example:
    >>> loaded = load_repo("glue", RepoOptions(config="sst2"), "data.train")      # doctest: +SKIP
    >>> select_split(loaded, "train[:90%]", "glue", "data.train_split")           # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets

from hftl.utils.errors import DataError


@dataclass
class RepoOptions:
    """data.dataset_config and data.revision (None: the dataset's default)."""

    config: str | None = None
    revision: str | None = None


def is_dataset_repo(path: Path) -> bool:
    """A folder laid out like a Hub dataset repo: a README.md whose YAML metadata declares `configs:`."""
    readme = path / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text(errors="replace")
    if not text.startswith("---"):
        return False
    header = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    return any(line.startswith(("configs:", "dataset_info:")) for line in header.splitlines())


def load_repo(spec: str, options: RepoOptions, key: str) -> dict[str, datasets.Dataset]:
    """Every split of `spec` (a Hub id or a dataset-repo folder) in the configured config and revision."""
    kwargs = {"name": options.config} if options.config else {}
    if options.revision:
        kwargs["revision"] = options.revision
    try:
        loaded = datasets.load_dataset(spec, **kwargs)
    except Exception as e:  # noqa: BLE001 - offline, missing, private datasets and unknown configs fail differently
        first = (str(e).strip() or type(e).__name__).splitlines()[0][:400]
        hint = "" if options.config else " If the dataset has several configs, name one with data.dataset_config=NAME."
        raise DataError(
            f"{key}={spec}: loading it as a dataset failed: {first}.{hint} Check the id (or folder), data.dataset_config "
            "and data.revision, and your network (HF_HUB_OFFLINE=1 blocks the Hub)"
        ) from None
    return dict(loaded)


def select_split(loaded: dict[str, datasets.Dataset], wanted: str, where: str, key: str) -> datasets.Dataset:
    """The split `wanted` of `loaded`: a name, or a slice such as `train[:90%]` or `train[:80%]+validation`."""
    try:
        instruction = datasets.ReadInstruction.from_spec(wanted)
    except (ValueError, AssertionError) as e:
        raise DataError(f"{key}={wanted!r} is not a split name or slice ({e}); write e.g. train, or train[:90%]") from None
    names = {part.split("[", 1)[0].strip() for part in wanted.split("+")}
    missing = sorted(names - set(loaded))
    if missing:
        raise DataError(f"{key}={wanted!r}: {where} has no split {missing[0]!r}; its splits are {', '.join(sorted(loaded))}")
    parts = []
    for absolute in instruction.to_absolute({name: len(ds) for name, ds in loaded.items()}):
        parts.append(loaded[absolute.splitname].select(range(absolute.from_, absolute.to)))
    selected = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if len(selected) == 0:
        raise DataError(f"{key}={wanted!r} selects no examples of {where}; widen the slice")
    return selected
