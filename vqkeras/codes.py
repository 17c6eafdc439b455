"""What a discrete model's codes are, described from its configuration.

Every discrete family describes its codes as a tuple of `CodeGrid`s
(`model.code_grids()`), without running a forward pass. `encode_indices`
returns one int32 array for a model with one grid (a VQ-VAE's `(B, h, w)`,
an RQ-VAE's `(B, h, w, depth)`) and a dict of arrays keyed by grid name for
a model with several (VQ-VAE-2's `{"top": ..., "bottom": ...}`);
`decode_indices` takes the same. The functions here let consumers (apps,
evaluation, recipes, priors) treat both alike.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class CodeGrid:
    """One grid of integer codes per image.

    Attributes:
        name: the grid's name: "indices" for a model's only grid, else e.g.
            "top" or "bottom".
        shape: the codes of one image: `(h, w)`, or `(h, w, depth)` for
            stacked codes (a position's levels, coarse to fine).
        num_embeddings: K, the number of distinct values of each code.
        conditioned_on: the name of the grid whose codes this grid's codes
            were chosen given (VQ-VAE-2's bottom grid is chosen given the
            top one): a prior over this grid is conditioned on that grid.
    """

    name: str
    shape: tuple
    num_embeddings: int
    conditioned_on: str | None = None

    @property
    def spatial_shape(self):
        """`(h, w)`."""
        return tuple(self.shape[:2])

    @property
    def depth(self):
        """The number of stacked codes per position, or None for one code."""
        return self.shape[2] if len(self.shape) == 3 else None

    @property
    def bits_per_image(self):
        """The size of one image's codes stored without entropy coding."""
        return math.prod(self.shape) * math.log2(self.num_embeddings)


SINGLE_GRID_NAME = "indices"


def codes_by_name(grids, codes):
    """`{grid name: codes}` of what `encode_indices` returned for `grids`."""
    if len(grids) == 1:
        return {grids[0].name: codes}
    return {grid.name: codes[grid.name] for grid in grids}


def codes_from_names(grids, by_name):
    """What `decode_indices` takes, from `{grid name: codes}` of `grids`."""
    missing = [grid.name for grid in grids if grid.name not in by_name]
    if missing or len(by_name) != len(grids):
        raise ValueError(
            f"Expected the code grids {[grid.name for grid in grids]}. Received: {sorted(by_name)}."
        )
    if len(grids) == 1:
        return by_name[grids[0].name]
    return {grid.name: by_name[grid.name] for grid in grids}
