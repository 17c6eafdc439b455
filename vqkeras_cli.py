"""The launcher of the `vqkeras` command (also `python -m vqkeras_cli`).

It is a module of its own, outside the `vqkeras` package, because importing
`vqkeras` imports TensorFlow, whose native code prints start-up notices (the
oneDNN and CPU-instruction lines, Abseil's pre-initialisation warning) straight
to file descriptor 2 while it loads; no Python setting reaches them, and
`TF_CPP_MIN_LOG_LEVEL` is read too late for them. A command-line tool should
print its own messages only, so the launcher imports the package with those
lines filtered out, and sets `TF_CPP_MIN_LOG_LEVEL=2` for the rest of the run
(TensorFlow's info and warning lines; its errors still show). `--debug`
shows everything.
"""

import contextlib
import os
import re
import sys
import tempfile

# Abseil's prefix ("I0000 00:00:1796... 1234 port.cc:153] ") marks the native
# info (I) and warning (W) lines; TensorFlow's CPU notice ends on a bare line.
NATIVE_STARTUP_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.]+:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow"
)


@contextlib.contextmanager
def native_startup_lines_filtered():
    """Captures file descriptor 2 for the body, then writes back to stderr
    every captured line that is not a native start-up notice."""
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(terminal_fd, 2)
            os.close(terminal_fd)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not NATIVE_STARTUP_LINE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in argv:
        from vqkeras.apps import cli
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with native_startup_lines_filtered():
            # TensorFlow now, whatever the Keras backend: on JAX and PyTorch the
            # apps import it later (tf.data), and it would print its notices then.
            import tensorflow  # noqa: F401

            from vqkeras.apps import cli
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
