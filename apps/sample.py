"""`vqkeras sample`: new images from a PixelCNN prior over a VQ model's codes.

A VQVAE needs a prior over its `(h, w)` code grids, an RQVAE a prior with
`depth` over its `(h, w, depth)` stacked codes. A VQVAE2 needs two: `--prior`
over its top grid and `--bottom-prior` over its bottom grid, conditioned on
the top one; the top codes are sampled first.

Writes to the output folder:

    samples.png   the decoded samples (with the default labels of a
                  class-conditional prior, one column per class)
    codes.npz     the sampled codes (`indices` int32 `(N, h, w)` or
                  `(N, h, w, depth)`; `top` and `bottom` for a VQVAE2), their
                  `labels` (class-conditional priors), and the names of the
                  `model` and `prior`: `vqkeras export-latents --decode`
                  decodes it again

Example:

    vqkeras sample --model vqvae_mnist --prior pixelcnn_vqvae_mnist --num 64 --label 3 \\
        --seed 0 --out runs/samples
"""

import keras
import numpy as np

from vqkeras.apps import models
from vqkeras.apps.images import image_grid, to_uint8, write_png
from vqkeras.apps.outputs import make_folder, output_paths
from vqkeras.file_io import write_atomic
from vqkeras.models.pixelcnn_prior import PixelCNNPrior
from vqkeras.presets import from_preset

GRID_COLUMNS = 8
MAX_CLASS_COLUMNS = 16


def _grid_text(shape, count):
    return f"{'x'.join(str(size) for size in shape)} grids of K={count} codes"


def _check_level(prior, prior_name, model_name, shape, count, condition=None):
    """Raises a clear error unless `prior` samples `shape` grids of `count`
    codes (given a `(shape, count)` condition grid, or none)."""
    if (count, tuple(shape)) != (prior.num_embeddings, prior.code_shape):
        raise ValueError(
            f"Prior {prior_name!r} samples {_grid_text(prior.code_shape, prior.num_embeddings)}"
            f" but model {model_name!r} decodes {_grid_text(shape, count)}: they do not fit."
        )
    given = None
    if prior.conditioned_on_grid:
        given = (tuple(prior.condition_grid_shape), prior.condition_num_embeddings)
    if given != condition:
        wanted = "no condition grid" if condition is None else _grid_text(*condition)
        has = "none" if given is None else _grid_text(*given)
        raise ValueError(
            f"Prior {prior_name!r} needs {wanted} for model {model_name!r}; it is conditioned "
            f"on {has}."
        )


def check_fit(model, model_name, prior, prior_name, bottom_prior=None, bottom_prior_name=None):
    """Raises a clear error unless the priors sample the codes `model` decodes:
    one prior for a single grid, a top and a bottom prior for a VQVAE2."""
    shapes = models.code_shapes(model, model_name)
    if models.SINGLE_LEVEL in shapes:
        if bottom_prior is not None:
            raise ValueError(
                f"--bottom-prior is for a VQVAE2's two levels; model {model_name!r} has one."
            )
        shape = tuple(shapes[models.SINGLE_LEVEL])
        _check_level(prior, prior_name, model_name, shape, model.num_embeddings)
        return
    if bottom_prior is None:
        levels = ", ".join(f"{level} {tuple(shape)}" for level, shape in shapes.items())
        raise ValueError(
            f"Model {model_name!r} has the code grids {levels}: give --prior for the top grid "
            "and --bottom-prior for the bottom grid, conditioned on the top one."
        )
    top = (tuple(shapes["top"]), models.num_embeddings(model, "top"))
    _check_level(prior, prior_name, model_name, *top)
    bottom = (tuple(shapes["bottom"]), models.num_embeddings(model, "bottom"))
    _check_level(bottom_prior, bottom_prior_name, model_name, *bottom, condition=top)


def sample_labels(prior, prior_name, label, num):
    """The label of each sample: `label`, or for a class-conditional prior
    without one, the classes in turn."""
    if label is None:
        return np.arange(num) % prior.num_classes if prior.conditional else None
    if not prior.conditional:
        raise ValueError(
            f"--label {label} given, but prior {prior_name!r} is unconditional (no classes)."
        )
    if not 0 <= label < prior.num_classes:
        raise ValueError(
            f"--label must be in [0, {prior.num_classes}) for prior {prior_name!r}. "
            f"Received: --label {label}"
        )
    return np.full(num, label)


def run(args):
    paths = output_paths(args.out, ("samples.png", "codes.npz"), args.overwrite)
    model = models.load_model(args.model)
    models.require_codes(model, args.model)
    prior = from_preset(args.prior, expected_class=PixelCNNPrior)
    bottom_prior = None
    if args.bottom_prior is not None:
        bottom_prior = from_preset(args.bottom_prior, expected_class=PixelCNNPrior)
    check_fit(model, args.model, prior, args.prior, bottom_prior, args.bottom_prior)
    labels = sample_labels(prior, args.prior, args.label, args.num)
    if bottom_prior is not None and bottom_prior.conditional != prior.conditional:
        raise ValueError(
            f"Prior {args.prior!r} and bottom prior {args.bottom_prior!r} must both be "
            "class-conditional or both unconditional."
        )
    top_level = models.SINGLE_LEVEL if bottom_prior is None else "top"
    parts = {top_level: []} if bottom_prior is None else {"top": [], "bottom": []}
    for number, batch in enumerate(
        models.batches(args.num, args.batch_size, "sampling", args.quiet)
    ):
        count = len(range(args.num)[batch])
        options = {
            "labels": None if labels is None else labels[batch],
            "temperature": args.temperature,
            "top_k": args.top_k,
        }
        # One seed per batch, derived from --seed: the same --seed and
        # --batch-size give the same samples (on the same backend). The
        # bottom prior's seeds lie past all the top prior's.
        seed = None if args.seed is None else args.seed + number
        grids = keras.ops.convert_to_numpy(prior.sample(count, seed=seed, **options))
        parts[top_level].append(grids.astype("int32"))
        if bottom_prior is not None:
            bottom_seed = None if seed is None else seed + args.num
            bottom = bottom_prior.sample(count, condition=grids, seed=bottom_seed, **options)
            parts["bottom"].append(keras.ops.convert_to_numpy(bottom).astype("int32"))
    codes = {level: np.concatenate(grids) for level, grids in parts.items()}
    images = to_uint8(models.decode(model, codes, args.batch_size, args.quiet))
    by_class = args.label is None and prior.conditional and prior.num_classes <= MAX_CLASS_COLUMNS
    columns = prior.num_classes if by_class else GRID_COLUMNS
    rows = [list(images[start : start + columns]) for start in range(0, len(images), columns)]
    make_folder(paths["samples.png"])
    write_png(paths["samples.png"], image_grid(rows, columns), args.overwrite)
    arrays = {**codes, "model": np.array(args.model), "prior": np.array(args.prior)}
    if bottom_prior is not None:
        arrays["bottom_prior"] = np.array(args.bottom_prior)
    if labels is not None:
        arrays["labels"] = labels
    write_atomic(
        paths["codes.npz"], lambda f: np.savez(f, **arrays), overwrite=args.overwrite, mode="wb"
    )
    return {
        "model": args.model,
        "prior": args.prior,
        "bottom_prior": args.bottom_prior,
        "num": args.num,
        "label_counts": None
        if labels is None
        else {str(label): int(n) for label, n in enumerate(np.bincount(labels)) if n},
        "temperature": args.temperature,
        "top_k": args.top_k,
        "seed": args.seed,
        "out": paths,
    }
