"""Every report hftl writes opens in a real browser: headless Chromium (Debian's `chromium`, which `.ci/run`
installs) loads the study, probe and search reports, every image shows, and nothing lands in the console."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.browser import render
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def check(page: Path, images: int) -> None:
    seen = render(page)
    assert seen["errors"] == [], seen["errors"]
    assert len(seen["images"]) == images and all(img["loaded"] for img in seen["images"]), seen["images"]
    assert seen["title"].startswith("hftl")


def test_the_checker_sees_a_broken_image_and_a_console_error(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><title>t</title><img alt="gone" src="missing.png"><script>console.error("bad")</script>')
    seen = render(page)
    assert seen["images"] == [{"alt": "gone", "loaded": False}]
    assert any("bad" in e for e in seen["errors"]) and any("missing.png" in e or "ERR_FILE" in e for e in seen["errors"])


def test_study_probe_and_search_reports_render_whole(chromium, tiny_vit, digits, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "task": "image-classification", "model": {"name_or_path": str(tiny_vit)},
        "data": {"train": str(digits), "augment": False},
        "train": {"epochs": 2, "batch_size": 16, "report_to": "none", "learning_rate": 1e-2},
    }))  # fmt: skip
    run_cli("compare", str(config), f"output_dir={tmp_path / 'study'}", "--strategies", "head_only,full", in_process=True)
    check(tmp_path / "study" / "report.html", images=len(list((tmp_path / "study" / "plots").glob("*.png"))))

    run_cli("probe", str(config), "--models", str(tiny_vit), f"output_dir={tmp_path / 'probe'}", in_process=True)
    check(tmp_path / "probe" / "report.html", images=1)

    run_cli("search", str(config), "--trials", "3", f"output_dir={tmp_path / 'search'}", "strategy=head_only", in_process=True)
    check(tmp_path / "search" / "report.html", images=len(list((tmp_path / "search" / "plots").glob("*.png"))))
    assert REPO.is_dir()
