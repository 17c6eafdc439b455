"""The launcher of the `vqkeras` command (also `python -m vqkeras_cli`).

It is a module of its own, outside the `vqkeras` package, because importing
`vqkeras` may import TensorFlow (the TensorFlow backend's, or XLA's and
Keras's wherever TensorFlow is installed), whose native code writes log lines
straight to file descriptor 2: start-up notices while it loads (oneDNN, CPU instructions,
Abseil's pre-initialisation warning), later the graph optimiser's harmless
"remapper failed" errors on residual blocks, XLA's compilation notices.
`TF_CPP_MIN_LOG_LEVEL` does not reach all of them. A command-line tool
should print its own messages only, so the launcher runs the whole command
with file descriptor 2 read through a filter that drops native log lines
(Abseil's `I`, `W` and `E` lines; fatal `F` lines pass), while Python's
`sys.stderr` (the command's notices, errors and progress bars) goes to the
terminal directly. A failure that matters reaches the command as a Python
exception, and so its one-line error. `--debug` shows everything.
"""

import contextlib
import os
import re
import sys
import threading

# Abseil's prefix ("I0000 00:00:1796... 1234 port.cc:153] ") marks native
# info, warning and error lines; TensorFlow's CPU notice ends on a bare line.
NATIVE_LOG_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow"
)


@contextlib.contextmanager
def native_log_lines_filtered():
    """Runs the body with native writes to file descriptor 2 filtered.

    Python's `sys.stderr` writes to the terminal directly; file descriptor 2,
    where native code writes, becomes a pipe that a thread reads line by line,
    passing on every line that is not a native log line.
    """
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    python_stderr = sys.stderr
    sys.stderr = open(terminal_fd, "w", buffering=1, errors="backslashreplace", closefd=False)

    def forward():
        with open(read_fd, "rb") as pipe:
            for line in pipe:
                if not NATIVE_LOG_LINE.match(line.decode(errors="replace")):
                    os.write(terminal_fd, line)

    forwarder = threading.Thread(target=forward, name="native-log-filter", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        # The pipe's only write end was descriptor 2: the reader gets its end.
        os.dup2(terminal_fd, 2)
        forwarder.join(timeout=10)
        os.close(terminal_fd)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in argv:
        from vqkeras.apps import cli

        return cli.main(argv)
    with native_log_lines_filtered():
        from vqkeras.apps import cli

        return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
