"""Output files of the apps: never replace one without --overwrite, and find
out before any work is done."""

import os

from vqkeras.apps.inputs import uses_split


def check_outputs(paths, overwrite):
    """Raises before any work if an output exists and may not be replaced."""
    for path in paths:
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it.")


def output_paths(folder, names, overwrite):
    """`{name: path}` of the outputs `names` in `folder`, checked before any
    work (the folder itself is made by `make_folder` when there is something
    to write)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise FileExistsError(f"--out {folder!r} is a file: expected a folder.")
    paths = {name: os.path.join(folder, name) for name in names}
    check_outputs(paths.values(), overwrite)
    return paths


def make_folder(path):
    """Creates the folder of `path` (an output file) if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def image_file_names(names, count, suffix=".png"):
    """A unique file name per image, in order: the stem of its input file
    (`names`, the paths images were read from), else its index (zero-padded,
    for inputs without files). A stem met before, ignoring case (two
    folders' photo.jpg, or photo.png beside photo.jpg), gets the first free
    suffix _1, _2, ... Only the base name of an input is used, so no name
    leads outside the output folder."""
    if names:
        stems = [os.path.splitext(os.path.basename(name))[0] or "image" for name in names]
    else:
        stems = [f"{index:0{len(str(count - 1))}d}" for index in range(count)]
    taken, result = set(), []
    for stem in stems:
        name, number = stem, 0
        while name.casefold() in taken:
            number += 1
            name = f"{stem}_{number}"
        taken.add(name.casefold())
        result.append(name + suffix)
    return result


def describe_input(specs, split):
    """`{"input", "split"}` for a summary: the input spec (the list when
    several), and the split where one was used (.npz files, tfds:NAME)."""
    return {
        "input": specs[0] if len(specs) == 1 else list(specs),
        "split": split if any(uses_split(spec) for spec in specs) else None,
    }
