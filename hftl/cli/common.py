"""What several subcommands share: printing once under a multi-process launch, and a study's table and report."""

from __future__ import annotations

from typing import Any

from hftl.utils.errors import HftlError


def is_main_process() -> bool:
    """True in the one process that prints (every process runs the command under torchrun / accelerate launch)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def print_study(study: Any) -> None:
    """A study's table and report paths; a non-zero exit when a run of it failed."""
    from hftl.studies.compare_report import format_table

    print("\n" + format_table(study))
    if getattr(study, "speech_recognition", None):  # the speech demo's accent study
        from hftl.studies.accent_demo import format_rows

        print("\nspeech recognition on an accent held out of training:\n" + format_rows(study.speech_recognition))
    if study.report_md is not None:
        print(f"\nreport: {study.report_md}  (self-contained: {study.report_html})")
    # A refused pair is listed, not failed; a cell another process has not finished yet is not a failure either.
    failed = [r for r in study.runs if r.error and not r.error.startswith(("refused", "not run yet"))]
    if failed:
        raise HftlError(f"{len(failed)} run(s) failed: " + "; ".join(f"{r.arm}: {r.error[:200]}" for r in failed))
