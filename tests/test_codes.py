import numpy as np
import pytest
from conftest import options_of

from vqkeras.codes import CodeGrid, codes_by_name, codes_from_names
from vqkeras.models import PixelCNNPrior
from vqkeras.models.factory import build_autoencoder


def test_a_grid_knows_its_spatial_shape_depth_and_size_in_bits():
    plain = CodeGrid("indices", (7, 7), 128)
    stacked = CodeGrid("indices", (8, 8, 4), 512)
    assert (plain.spatial_shape, plain.depth, plain.bits_per_image) == ((7, 7), None, 343.0)
    assert (stacked.spatial_shape, stacked.depth, stacked.bits_per_image) == ((8, 8), 4, 2304.0)


def test_codes_of_one_grid_stay_an_array_and_several_a_dict():
    one = (CodeGrid("indices", (2, 2), 4),)
    two = (CodeGrid("top", (1, 1), 4), CodeGrid("bottom", (2, 2), 4, conditioned_on="top"))
    array = np.zeros((3, 2, 2), "int32")
    assert codes_by_name(one, array)["indices"] is array
    assert codes_from_names(one, {"indices": array}) is array
    pair = {"top": np.zeros((3, 1, 1)), "bottom": array}
    assert codes_by_name(two, pair) == pair == codes_from_names(two, pair)
    with pytest.raises(ValueError, match=r"Expected the code grids \['top', 'bottom'\].*\['top'\]"):
        codes_from_names(two, {"top": array})


@pytest.mark.parametrize(
    "family, expected",
    [
        ("ema-vqvae", [("indices", (4, 4), 16, None)]),
        ("rqvae", [("indices", (4, 4, 3), 16, None)]),
        ("vqvae2", [("top", (2, 2), 16, None), ("bottom", (4, 4), 16, "top")]),
        ("klvae", []),
    ],
)
def test_models_describe_their_grids_and_priors_are_built_for_them(family, expected):
    sizes = options_of(family, latent_dim=4, num_embeddings=16, depth=3)
    model = build_autoencoder(family, (16, 16, 1), channels=(8, 8), **sizes)
    grids = model.code_grids()
    assert [(g.name, g.shape, g.num_embeddings, g.conditioned_on) for g in grids] == expected
    by_name = {grid.name: grid for grid in grids}
    for grid in grids:
        condition = by_name.get(grid.conditioned_on)
        prior = PixelCNNPrior.for_grid(grid, condition, num_classes=10, filters=8, num_blocks=1)
        assert prior.fits(grid, condition) and prior.code_shape == grid.shape
        # A prior fits one grid, with its own condition or none.
        others = [g for g in grids if g is not grid]
        assert not any(prior.fits(other, condition) for other in others)
        assert not prior.fits(grid, None if condition else grid)
