import warnings

import keras
import numpy as np
import pytest

from vqkeras import validation


class Renamed:
    @validation.renamed_arguments(old_weight="new_weight", old_flag="new_flag")
    def __init__(self, size, new_weight=1.0, *, new_flag=False):
        self.size, self.new_weight, self.new_flag = size, new_weight, new_flag


def test_renamed_arguments_pass_the_old_keyword_as_the_new_one_with_a_warning():
    with pytest.warns(
        DeprecationWarning, match=r"Renamed: `old_weight` is deprecated: use `new_weight`"
    ) as record:
        obj = Renamed(3, old_weight=0.5, old_flag=True)
    assert (obj.size, obj.new_weight, obj.new_flag) == (3, 0.5, True)
    assert [str(w.message).split(":")[1].strip() for w in record] == [
        "`old_weight` is deprecated",
        "`old_flag` is deprecated",
    ]
    # The warning points at the caller, not at the decorator.
    assert record[0].filename == __file__


def test_renamed_arguments_are_silent_without_the_old_keyword():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obj = Renamed(3, 0.25, new_flag=True)
    assert (obj.new_weight, obj.new_flag) == (0.25, True)


@pytest.mark.parametrize(
    "args, kwargs, received",
    [
        ((3,), {"old_weight": 0.5, "new_weight": 0.25}, "old_weight=0.5 and new_weight=0.25"),
        ((3, 0.25), {"old_weight": 0.5}, "old_weight=0.5 and new_weight=0.25"),
        ((3,), {"old_flag": True, "new_flag": False}, "old_flag=True and new_flag=False"),
    ],
)
def test_renamed_arguments_refuse_both_names(args, kwargs, received):
    with pytest.raises(ValueError, match=f"deprecated name of .*Received both {received}"):
        Renamed(*args, **kwargs)


def test_to_unit_range_scales_uint8_only_and_keeps_the_array_kind():
    images = np.arange(256, dtype="uint8").reshape(4, 8, 8, 1)
    scaled = validation.to_unit_range(images)
    assert isinstance(scaled, np.ndarray) and scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, images.astype("float32") / np.float32(255))
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    floats = np.full((1, 2, 2, 1), 0.5, dtype="float64")
    assert validation.to_unit_range(floats) is floats
    tensor = validation.to_unit_range(keras.ops.convert_to_tensor(images))
    assert keras.ops.is_tensor(tensor) and validation.dtype_of(tensor) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor), scaled, rtol=1e-6, atol=0)
