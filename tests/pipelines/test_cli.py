"""Command-line conveniences: --version, defaults in --help."""

import pytest

from pipelines.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == "edgedistill 0.1.0"


@pytest.mark.parametrize("argv, shown", [
    (["data", "synth", "--help"], "scenes to generate (default: 2)"),
    (["bench", "--help"], "(default: 30)"),
    (["infer", "--help"], "(default: fp32)"),
])
def test_help_shows_defaults(capsys, argv, shown):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert shown in out
    assert "(default: None)" not in out


def test_console_log_follows_the_current_stderr(monkeypatch):
    """The console handler writes to sys.stderr as it is now: after the stream it started with is closed (a test
    harness, a notebook), records land in the new one, not in a 'Logging error' on the closed file."""
    import io
    import logging

    from pipelines.logs import setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    setup_logging()
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("edgedistill.test").info("after the swap")
    out = second.getvalue()
    assert "INFO edgedistill.test: after the swap" in out and "Logging error" not in out
