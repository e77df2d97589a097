"""Docs that cannot rot: every YAML block of the docs loads with `load_config` (or the search-space loader), every
`hftl ...` command line parses with the CLI's own parser and its overrides load, the generated reference pages
are current, and the site builds with `mkdocs build --strict` and names every config key and subcommand."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

PAGES = sorted([*(REPO / "docs").rglob("*.md"), REPO / "README.md", REPO / "CONTRIBUTING.md"])
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
SHELLS = ("bash", "console", "shell", "sh", "")
BASE = {"model": {"name_or_path": "a-checkpoint"}, "data": {"train": "data.csv"}}  # what a fragment is merged onto


def blocks(kind: str) -> list[tuple[str, str, str]]:
    """(where, fence attributes, body) of every fenced block of language `kind` ("shell": any shell) in the docs."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            lang = m["lang"].lower()
            if lang == kind or (kind == "shell" and lang in SHELLS):
                line = text[: m.start()].count("\n") + 1
                body = "\n".join(s.removeprefix(m["indent"]) for s in m["body"].splitlines())
                found.append((f"{page.relative_to(REPO)}:{line}", m["attrs"], body))
    return found


def merged(base: dict, fragment: dict) -> dict:
    out = dict(base)
    for key, value in fragment.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def command_lines(body: str) -> list[str]:
    """The `hftl ...` commands of a shell block: prompts dropped, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", body)
    lines = [line.strip().removeprefix("$ ") for line in joined.splitlines()]
    return [line for line in lines if line.startswith("hftl ")]


YAML_BLOCKS, SHELL_BLOCKS = blocks("yaml"), blocks("shell")  # read once, at collection


def test_the_docs_have_blocks_to_check():
    assert len(PAGES) > 15, PAGES
    assert len(YAML_BLOCKS) >= 10 and sum(len(command_lines(b)) for _, _, b in SHELL_BLOCKS) >= 30


@pytest.mark.parametrize(("where", "attrs", "body"), YAML_BLOCKS, ids=[w for w, _, _ in YAML_BLOCKS])
def test_every_yaml_block_loads(where, attrs, body):
    from hftl.config import load_config
    from hftl.studies.search_space import check_space

    raw = yaml.safe_load(body)
    title = re.search(r'title="([^"]*)"', attrs)
    if title and "space" in title[1]:
        check_space(raw, "image-classification", where)
    elif title is None:
        assert isinstance(raw, dict), f"{where}: an untitled yaml block must be an hftl config (or give it a title)"
        load_config(merged(BASE, raw))


def parse(argv: list[str], where: str):
    from hftl.cli import parse_args

    try:
        return parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: hftl {shlex.join(argv)} does not parse with the CLI's parser", pytrace=False)


@pytest.mark.parametrize(("where", "attrs", "body"), SHELL_BLOCKS, ids=[w for w, _, _ in SHELL_BLOCKS])
def test_every_hftl_command_line_parses(where, attrs, body):
    from hftl.config import load_config

    for line in command_lines(body):
        args = parse(shlex.split(line, comments=True)[1:], where)
        config = getattr(args, "config", None)
        if config and config.startswith("configs/"):
            assert (REPO / config).is_file(), f"{where}: {line} names {config}, which configs/ does not hold"
        overrides = [re.sub(r"^[a-z_]+:(?=[\w.]+=)", "", o) for o in getattr(args, "overrides", [])]  # lora:key=value
        if overrides:  # on the config the line names, else (a user's file, or the demo's embedded one) on BASE
            load_config(REPO / config if config and (REPO / config).is_file() else BASE, overrides)


def test_a_renamed_key_or_flag_would_fail():
    """The checks above must be able to fail: a misspelt flag, key and config file are caught."""
    from hftl.config import load_config
    from hftl.utils.errors import ConfigError

    with pytest.raises(pytest.fail.Exception):
        parse(["compare", "c.yaml", "--strategy", "lora"], "planted")
    with pytest.raises(ConfigError, match="epoch"):
        load_config(BASE, ["train.epoch=2"])
    with pytest.raises(ConfigError):
        load_config(merged(BASE, yaml.safe_load("train: {learning_rate: fast}")))


def test_the_generated_reference_pages_are_current():
    proc = subprocess.run([sys.executable, "scripts/docs_reference.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_links_between_pages_are_relative_and_point_at_files():
    """README's links into the site work on GitHub and in the site alike: relative, to files that exist."""
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#\s]+)", text)
    assert len(links) >= 10, "the README should link into the docs pages"
    missing = [link for link in links if not (REPO / link).exists()]
    assert not missing, missing
