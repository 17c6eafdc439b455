"""`vqkeras sample`: new images from a PixelCNN prior over a VQ model's codes.

Writes to the output folder:

    samples.png   the decoded samples (with the default labels of a
                  class-conditional prior, one column per class)
    codes.npz     the sampled codes `indices` int32 `(N, h, w)`, their
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


def check_fit(prior, prior_name, model, model_name):
    """Raises a clear error unless `prior` samples the code grids `model` decodes."""
    shapes = models.code_shapes(model, model_name)
    if list(shapes) != [models.SINGLE_LEVEL] or len(shapes[models.SINGLE_LEVEL]) != 2:
        levels = ", ".join(f"{level} {shape}" for level, shape in shapes.items())
        raise ValueError(
            f"Model {model_name!r} has the code grids {levels}: a PixelCNN prior samples a "
            "single (height, width) grid, as of a VQVAE."
        )
    shape = tuple(shapes[models.SINGLE_LEVEL])
    if (model.num_embeddings, shape) != (prior.num_embeddings, tuple(prior.grid_shape)):
        raise ValueError(
            f"Prior {prior_name!r} samples {_grid_text(prior.grid_shape, prior.num_embeddings)}"
            f" but model {model_name!r} decodes {_grid_text(shape, model.num_embeddings)}: "
            "they do not fit."
        )


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
    check_fit(prior, args.prior, model, args.model)
    labels = sample_labels(prior, args.prior, args.label, args.num)
    parts = []
    for number, batch in enumerate(
        models.batches(args.num, args.batch_size, "sampling", args.quiet)
    ):
        count = len(range(args.num)[batch])
        # One seed per batch, derived from --seed: the same --seed and
        # --batch-size give the same samples (on the same backend).
        seed = None if args.seed is None else args.seed + number
        grids = prior.sample(
            count,
            labels=None if labels is None else labels[batch],
            temperature=args.temperature,
            top_k=args.top_k,
            seed=seed,
        )
        parts.append(keras.ops.convert_to_numpy(grids).astype("int32"))
    codes = np.concatenate(parts)
    images = to_uint8(
        models.decode(model, {models.SINGLE_LEVEL: codes}, args.batch_size, args.quiet)
    )
    by_class = args.label is None and prior.conditional and prior.num_classes <= MAX_CLASS_COLUMNS
    columns = prior.num_classes if by_class else GRID_COLUMNS
    rows = [list(images[start : start + columns]) for start in range(0, len(images), columns)]
    make_folder(paths["samples.png"])
    write_png(paths["samples.png"], image_grid(rows, columns), args.overwrite)
    arrays = {
        models.SINGLE_LEVEL: codes,
        "model": np.array(args.model),
        "prior": np.array(args.prior),
    }
    if labels is not None:
        arrays["labels"] = labels
    write_atomic(
        paths["codes.npz"], lambda f: np.savez(f, **arrays), overwrite=args.overwrite, mode="wb"
    )
    return {
        "model": args.model,
        "prior": args.prior,
        "num": args.num,
        "label_counts": None
        if labels is None
        else {str(label): int(n) for label, n in enumerate(np.bincount(labels)) if n},
        "temperature": args.temperature,
        "top_k": args.top_k,
        "seed": args.seed,
        "out": paths,
    }
