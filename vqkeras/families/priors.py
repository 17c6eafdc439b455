"""The prior families: priors over an autoencoder's code grids, trained by
`vqkeras train --family <prior> --model AUTOENCODER` and the zoo's prior
recipes (see `vqkeras.families.registry`).

A prior family builds its prior for one `vqkeras.codes.CodeGrid` of the
autoencoder (`model.code_grids()`), given the grid it is conditioned on
(VQ-VAE-2's bottom grid on the top one) and the number of classes of the
labels (None: unconditional).
"""

import dataclasses

from vqkeras import validation
from vqkeras.families.options import Options, non_negative_float, option
from vqkeras.families.registry import Family, register_family
from vqkeras.models import MaskGITPrior, PixelCNNPrior, TransformerPrior


@dataclasses.dataclass(frozen=True)
class PriorOptions(Options):
    grid: str | None = option(
        None,
        "the autoencoder's code grid to model, e.g. top or bottom for a VQ-VAE-2 (the bottom "
        "prior is conditioned on the top codes; none: its only grid)",
        parse=str,
        metavar="NAME",
    )
    depth: int | None = option(
        None,
        "stacked codes (an RQ-VAE's): model only the first DEPTH levels, coarse to fine "
        "(none: all)",
        parse=int,
        metavar="DEPTH",
    )

    def __post_init__(self):
        self.check("depth", validation.positive_int, optional=True)

    def architecture(self):
        """The prior's constructor arguments from these options."""
        skipped = PriorOptions.names()
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skipped}


class PriorFamily(Family):
    """Base of the prior families: `prior_class` built by `build`."""

    kind = "prior"
    prior_class = None
    # The cosine schedule of the zoo's priors ends at 5% of the initial rate.
    final_learning_rate_fraction = 0.05

    def modelled_grids(self, grids, options):
        """`(grid, condition)`: the `CodeGrid` of `grids` (an autoencoder's
        `code_grids()`) that the prior models, its depth cut to
        `options.depth`, and the grid it is conditioned on (or None).

        Raises:
            ValueError: for a model without codes, an unknown or missing
                `grid` name, or a `depth` the grid does not have.
        """
        names = [grid.name for grid in grids]
        if not grids:
            raise ValueError(
                f"A {self.name} models discrete codes, and the autoencoder has none: expected "
                "a VQ model (VQVAE, RQVAE, VQVAE2, ...)."
            )
        if options.grid is None and len(grids) > 1:
            raise ValueError(
                f"The autoencoder has the code grids {names}: choose the one the prior models "
                "with `grid` (--grid)."
            )
        if options.grid is not None and options.grid not in names:
            raise ValueError(
                f"The autoencoder has no code grid {options.grid!r}. Its grids: {names}."
            )
        by_name = {grid.name: grid for grid in grids}
        grid = by_name[options.grid or names[0]]
        if options.depth is not None:
            if grid.depth is None or options.depth > grid.depth:
                raise ValueError(
                    f"`depth` {options.depth} needs stacked codes of at least that many levels. "
                    f"Received: the grid {grid.name!r} of shape {tuple(grid.shape)}."
                )
            grid = dataclasses.replace(grid, shape=(*grid.spatial_shape, options.depth))
        condition = by_name[grid.conditioned_on] if grid.conditioned_on else None
        return grid, condition

    @staticmethod
    def inputs(codes, grid, condition):
        """What the prior trains on from `codes`, `{grid name: int32 codes}`
        (`vqkeras.codes.codes_by_name`): the grid's codes (cut to its depth),
        or the pair (codes, condition codes) for a conditioned prior."""
        modelled = codes[grid.name]
        if grid.depth is not None:
            modelled = modelled[..., : grid.depth]
        return modelled if condition is None else (modelled, codes[condition.name])

    def build(self, grid, options, *, condition=None, num_classes=None, image_shape=None, name):
        """The prior over the codes of `grid` (a `CodeGrid`), given those of
        the `condition` grid, built and uncompiled.

        Args:
            grid: the grid it models (its depth already cut to `options.depth`).
            options: the family's options.
            condition: the grid it is conditioned on, or None.
            num_classes: classes of the labels; None for an unconditional prior.
            image_shape: `(H, W, C)` of the images, for bits/dim (priors whose
                loss is a likelihood only).
            name: the prior's name.
        """
        kwargs = {"num_classes": num_classes, "name": name, **options.architecture()}
        if self.prior_class.nll_is_likelihood and image_shape is not None:
            kwargs["image_size"] = tuple(image_shape)
        prior = self.prior_class.for_grid(grid, condition, **kwargs)
        prior.build((None, *grid.spatial_shape))
        return prior


@dataclasses.dataclass(frozen=True)
class PixelCNNOptions(PriorOptions):
    filters: int = option(64, "channels of the gated blocks", parse=int, metavar="N")
    num_blocks: int = option(4, "gated PixelCNN blocks", parse=int, metavar="N")
    kernel_size: int = option(5, "the blocks' kernel size (odd)", parse=int, metavar="N")
    embedding_dim: int = option(64, "width of the code embeddings", parse=int, metavar="N")

    def __post_init__(self):
        super().__post_init__()
        for name in ("filters", "num_blocks", "kernel_size", "embedding_dim"):
            self.check(name, validation.positive_int)


@register_family("pixelcnn-prior")
class PixelCNNPriorFamily(PriorFamily):
    """`PixelCNNPrior`: a gated PixelCNN over the codes, any grid size."""

    Options = PixelCNNOptions
    prior_class = PixelCNNPrior


@dataclasses.dataclass(frozen=True)
class TransformerOptions(PriorOptions):
    embed_dim: int = option(128, "width of the token features", parse=int, metavar="N")
    num_heads: int = option(4, "attention heads (dividing the width)", parse=int, metavar="N")
    num_layers: int = option(4, "Transformer blocks", parse=int, metavar="N")
    mlp_ratio: int = option(4, "hidden width of each block's MLP over the width", parse=int)
    dropout: float = option(0.0, "dropout in the blocks and on the embeddings", parse=float)
    label_dropout: float = option(
        0.1,
        "probability in training of replacing a label by the null class (classifier-free guidance)",
        parse=float,
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("embed_dim", "num_heads", "num_layers", "mlp_ratio"):
            self.check(name, validation.positive_int)
        for name in ("dropout", "label_dropout"):
            self.check(name, non_negative_float)
            self.check(name, validation.float_in_range, 0.0, 1.0, high_inclusive=False)


@register_family("transformer-prior")
class TransformerPriorFamily(PriorFamily):
    """`TransformerPrior`: an autoregressive Transformer with a key/value
    cache and classifier-free guidance, for its trained grid size."""

    Options = TransformerOptions
    prior_class = TransformerPrior


@register_family("maskgit-prior")
class MaskGITPriorFamily(PriorFamily):
    """`MaskGITPrior`: a bidirectional Transformer decoding all codes in a
    few parallel steps (its loss is no likelihood)."""

    Options = TransformerOptions
    prior_class = MaskGITPrior
