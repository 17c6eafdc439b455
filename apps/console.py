"""What the apps tell the user on stderr: warnings, notices and progress bars.

stdout is kept for results (JSON, listings), so that they can be piped.
"""

import sys

from tqdm import tqdm


def warn(message):
    """A one-line warning on stderr: something was skipped or changed."""
    print(f"vqkeras: warning: {message}", file=sys.stderr)


def notice(message):
    """A one-line notice on stderr: something the user may not expect was done."""
    print(f"vqkeras: note: {message}", file=sys.stderr)


def progress(iterable, total=None, description=None, quiet=False):
    """`iterable` wrapped in a tqdm bar on stderr.

    The bar is shown only on a terminal: in logs and pipes it would only add
    noise (`--quiet` hides it on a terminal too).
    """
    disable = quiet or not sys.stderr.isatty()
    return tqdm(
        iterable, total=total, desc=description, disable=disable, file=sys.stderr, leave=False
    )
