"""tests/conftest.py's `require`: a missing optional asset skips on a laptop, and fails under CI."""

from __future__ import annotations

import pytest

from tests.conftest import require


def test_require_skips_without_ci_and_fails_with_the_install_hint_under_ci(monkeypatch):
    missing = "hftl_tests_no_such_module"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="pip install no-such-thing"):
        require(missing, "pip install no-such-thing")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require(missing, "pip install no-such-thing")
    for value in ("true", "1", "TRUE"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match="must be installed .*pip install no-such-thing"):
            require(missing, "pip install no-such-thing")
    import json

    assert require("json") is json  # present: the module itself, under CI and without
    monkeypatch.delenv("CI")
    assert require("json") is json
