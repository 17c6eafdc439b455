"""`vqkeras sample`: new images from a prior over a VQ model's codes.

Any prior preset: a `PixelCNNPrior`, a `TransformerPrior` (autoregressive,
with a key/value cache) or a `MaskGITPrior` (parallel decoding in
`--num-steps` steps). A VQVAE needs a prior over its `(h, w)` code grids, an
RQVAE a PixelCNN prior with `depth` over its `(h, w, depth)` stacked codes. A
VQVAE2 needs two: `--prior` over its top grid and `--bottom-prior` (a
PixelCNN prior) over its bottom grid, conditioned on the top one; the top
codes are sampled first.

`--temperature` applies to every prior; `--top-k` and `--top-p` to every
prior's code draws; `--guidance-scale` (classifier-free guidance) to the
Transformer priors, `--num-steps` and `--choice-temperature` to MaskGIT. An
option the prior does not take is refused with the options it does.

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
    vqkeras sample --model vqvae_mnist --prior my_transformer_prior/ --guidance-scale 2 \\
        --top-p 0.95 --out runs/guided
"""

import keras
import numpy as np

from vqkeras.apps import models
from vqkeras.apps.images import image_grid, to_uint8, write_png
from vqkeras.apps.outputs import make_folder, output_paths
from vqkeras.file_io import write_atomic
from vqkeras.models.code_prior import CodePrior
from vqkeras.presets import from_preset

GRID_COLUMNS = 8
MAX_CLASS_COLUMNS = 16
# Options of the priors' `sample` that the command line may set (`--top-k` ...).
SAMPLING_OPTIONS = ("top_k", "top_p", "guidance_scale", "num_steps", "choice_temperature")


def _grid_text(shape, count):
    return f"{'x'.join(str(size) for size in shape)} grids of K={count} codes"


def _check_level(prior, prior_name, model_name, grid, condition=None):
    """Raises a clear error unless `prior` samples the codes of `grid` given
    those of the `condition` grid (or given none)."""
    if (grid.num_embeddings, tuple(grid.shape)) != (prior.num_embeddings, prior.code_shape):
        raise ValueError(
            f"Prior {prior_name!r} samples {_grid_text(prior.code_shape, prior.num_embeddings)}"
            f" but model {model_name!r} decodes {_grid_text(grid.shape, grid.num_embeddings)}: "
            "they do not fit."
        )
    if not prior.fits(grid, condition):
        wanted = (
            "no condition grid"
            if condition is None
            else _grid_text(condition.spatial_shape, condition.num_embeddings)
        )
        has = "none"
        if prior.conditioned_on_grid:
            has = _grid_text(prior.condition_grid_shape, prior.condition_num_embeddings)
        raise ValueError(
            f"Prior {prior_name!r} needs {wanted} for model {model_name!r}; it is conditioned "
            f"on {has}."
        )


def check_fit(model, model_name, priors):
    """Raises a clear error unless `priors`, `[(prior, name)]`, sample the
    codes `model` decodes: one prior per code grid, in the grids' order, each
    conditioned on the grid its grid is chosen given (VQVAE2: `--prior` for
    the top grid, `--bottom-prior` for the bottom one given the top)."""
    grids = models.code_grids(model, model_name)
    if len(priors) > len(grids):
        raise ValueError(
            f"--bottom-prior is for a VQVAE2's two levels; model {model_name!r} has one."
        )
    if len(priors) < len(grids):
        levels = ", ".join(f"{grid.name} {tuple(grid.shape)}" for grid in grids)
        raise ValueError(
            f"Model {model_name!r} has the code grids {levels}: give --prior for the top grid "
            "and --bottom-prior for the bottom grid, conditioned on the top one."
        )
    by_name = {grid.name: grid for grid in grids}
    for grid, (prior, prior_name) in zip(grids, priors):
        condition = by_name.get(grid.conditioned_on)
        _check_level(prior, prior_name, model_name, grid, condition)


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


def sampling_options(prior, prior_name, args):
    """The keyword options of `prior.sample` that the command line sets:
    `--temperature`, and the others where given. Raises a clear error for an
    option that `prior` does not take."""
    given = {name: getattr(args, name, None) for name in SAMPLING_OPTIONS}
    options = {"temperature": args.temperature}
    for name, value in given.items():
        if value is None:
            continue
        if name not in prior.sampling_options:
            takes = ", ".join(f"--{option.replace('_', '-')}" for option in prior.sampling_options)
            raise ValueError(
                f"--{name.replace('_', '-')} is not an option of {type(prior).__name__} "
                f"{prior_name!r}; it takes {takes}."
            )
        options[name] = value
    return options


def run(args):
    paths = output_paths(args.out, ("samples.png", "codes.npz"), args.overwrite)
    model = models.load_model(args.model)
    models.require_codes(model, args.model)
    names = [args.prior] + ([] if args.bottom_prior is None else [args.bottom_prior])
    priors = [from_preset(name, expected_class=CodePrior) for name in names]
    check_fit(model, args.model, list(zip(priors, names)))
    options = [sampling_options(prior, name, args) for prior, name in zip(priors, names)]
    prior = priors[0]
    labels = sample_labels(prior, args.prior, args.label, args.num)
    if any(other.conditional != prior.conditional for other in priors[1:]):
        raise ValueError(
            f"Prior {args.prior!r} and bottom prior {args.bottom_prior!r} must both be "
            "class-conditional or both unconditional."
        )
    grids = models.code_grids(model, args.model)
    parts = {grid.name: [] for grid in grids}
    for number, batch in enumerate(
        models.batches(args.num, args.batch_size, "sampling", args.quiet)
    ):
        count = len(range(args.num)[batch])
        batch_labels = None if labels is None else labels[batch]
        # One seed per batch, derived from --seed: the same --seed and
        # --batch-size give the same samples (on the same backend). A VQVAE2's
        # bottom grid seeds lie past all those of its top grid.
        sampled = {}
        for level, (grid, grid_prior) in enumerate(zip(grids, priors)):
            seed = None if args.seed is None else args.seed + number + level * args.num
            grid_options = dict(options[level])
            if grid.conditioned_on is not None:
                grid_options["condition"] = sampled[grid.conditioned_on]
            codes = grid_prior.sample(count, labels=batch_labels, seed=seed, **grid_options)
            sampled[grid.name] = keras.ops.convert_to_numpy(codes).astype("int32")
            parts[grid.name].append(sampled[grid.name])
    codes = {name: np.concatenate(part) for name, part in parts.items()}
    images = to_uint8(models.decode(model, codes, args.batch_size, args.quiet))
    by_class = args.label is None and prior.conditional and prior.num_classes <= MAX_CLASS_COLUMNS
    columns = prior.num_classes if by_class else GRID_COLUMNS
    rows = [list(images[start : start + columns]) for start in range(0, len(images), columns)]
    make_folder(paths["samples.png"])
    write_png(paths["samples.png"], image_grid(rows, columns), args.overwrite)
    arrays = {**codes, "model": np.array(args.model), "prior": np.array(args.prior)}
    if args.bottom_prior is not None:
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
        "options": options[0],
        "seed": args.seed,
        "out": paths,
    }
