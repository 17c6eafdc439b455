import sys

from vqkeras.apps.console import notice, progress, warn


def test_warnings_and_notices_are_one_prefixed_line_on_stderr(capsys):
    warn("skipped 'x.txt'")
    notice("resized 2 image(s)")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "vqkeras: warning: skipped 'x.txt'\nvqkeras: note: resized 2 image(s)\n"


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch, capsys):
    assert list(progress(range(3), 3, "working")) == [0, 1, 2]
    assert progress(range(3)).disable  # stderr is captured here: not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress(range(3), 3, "working")
    assert not bar.disable
    assert list(bar) == [0, 1, 2]
    assert "working" in capsys.readouterr().err
    assert progress(range(3), quiet=True).disable
