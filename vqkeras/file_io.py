"""Atomic file writing: a reader never sees a half-written file."""

import json
import os
import tempfile


def current_umask():
    """The process umask (reading it means setting it, so set it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_atomic(path, write, overwrite=False, mode="w"):
    """Writes `path` through a temporary file in the same folder and a rename.

    Args:
        path: the file to write.
        write: a function that takes an open file and writes the contents.
        overwrite: replace an existing file; without it an existing file
            raises `FileExistsError` and is left untouched.
        mode: "w" for text, "wb" for bytes.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it.")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        # mkstemp makes the file private (0600); give it the usual permissions.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path, obj, overwrite=False):
    """Writes `obj` as indented JSON to `path`, atomically."""
    write_atomic(path, lambda f: json.dump(obj, f, indent=2, sort_keys=True), overwrite)
