"""The documentation site: `mkdocs build --strict` passes, the built pages name every leaf config key and every
`hftl` subcommand, and (slow) every page opens in headless Chromium with no console error and no request that
leaves 127.0.0.1 (no web fonts, no CDN, no GitHub API)."""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, require


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    require("mkdocs", "pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out


def test_the_site_names_every_leaf_config_key_and_every_subcommand(site):
    from hftl.cli import COMMANDS, build_parser
    from hftl.config.keys import leaf_keys

    config_page = (site / "reference" / "config" / "index.html").read_text()
    keys = leaf_keys()  # what load_config accepts
    assert len(keys) > 60
    missing = [key for key in keys if f"<code>{key}</code>" not in config_page]
    assert not missing, f"config keys the site does not name: {missing}"
    cli_page = (site / "reference" / "cli" / "index.html").read_text()
    commands = build_parser()._subparsers._group_actions[0].choices
    assert len(commands) == len(COMMANDS)
    missing = [name for name in commands if f'id="hftl-{name}"' not in cli_page]
    assert not missing, f"subcommands without a section in the CLI reference: {missing}"
    api_page = (site / "reference" / "api" / "index.html").read_text()
    import hftl

    public = [getattr(hftl, name) for name in hftl.__all__]
    undocumented = [f"{o.__module__}.{o.__qualname__}" for o in public if f'id="{o.__module__}.{o.__qualname__}"' not in api_page]
    assert not undocumented, f"public names without an entry on the API page (docs/reference/api.md): {undocumented}"
    assert "Fine-tune as the config says" in api_page  # the docstrings themselves, not only the headings


@pytest.fixture(scope="module")
def served(site) -> Iterator[str]:
    """The built site on an ephemeral port of 127.0.0.1 (material's search fetches its index over HTTP)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports what matters; the access log is noise
        pass


def _outside(requests: list[str], base: str) -> list[str]:
    return [url for url in requests if not url.startswith((base, "data:", "blob:"))]


@pytest.mark.slow
def test_every_page_opens_in_a_browser_offline(site, served, chromium):
    from tests.browser import render

    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
    assert len(pages) > 15, pages
    for page in pages:
        seen = render(served + page.removesuffix("index.html"))
        assert seen["errors"] == [], f"{page}: {seen['errors']}"
        assert not _outside(seen["requests"], served), f"{page} asks beyond 127.0.0.1: {_outside(seen['requests'], served)}"
        assert all(img["loaded"] for img in seen["images"]), f"{page}: {seen['images']}"
        assert seen["title"], page


@pytest.mark.slow
def test_the_browser_check_sees_a_request_that_leaves_the_machine(site, served, chromium):
    from tests.browser import render

    planted = site / "planted.html"
    planted.write_text(
        '<!doctype html><title>t</title><link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
    )
    try:
        seen = render(served + "planted.html")
    finally:
        planted.unlink()
    assert _outside(seen["requests"], served) == ["https://fonts.googleapis.com/css?family=Roboto"]
