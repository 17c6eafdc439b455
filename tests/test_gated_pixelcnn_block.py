import keras
import numpy as np
import pytest
from conftest import gradients, to_numpy

from vqkeras.layers.gated_pixelcnn_block import GatedPixelCNNBlock


class Stack(keras.layers.Layer):
    """A type A block, then type B blocks; returns the horizontal stack."""

    def __init__(self, num_blocks, filters, kernel_size, num_classes=None, labels=None):
        super().__init__()
        self.blocks = [
            GatedPixelCNNBlock("A" if i == 0 else "B", filters, kernel_size, num_classes)
            for i in range(num_blocks)
        ]
        self.labels = labels

    def call(self, x, training=None):
        vertical = horizontal = x
        for block in self.blocks:
            vertical, horizontal = block((vertical, horizontal), labels=self.labels)
        return horizontal


def expected_dependence(height, width, i, j, num_blocks, kernel_size):
    """The causal receptive field of output (i, j): rows above within reach,
    and the current row left of j; no blind spot."""
    reach = num_blocks * (kernel_size // 2)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    above = (rows < i) & (rows >= i - reach - 1) & (np.abs(cols - j) <= reach)
    left = (rows == i) & (cols < j) & (cols >= j - reach)
    return above | left


@pytest.mark.parametrize("num_blocks, kernel_size", [(3, 3), (2, 5)])
def test_stack_is_causal_without_blind_spot(num_blocks, kernel_size):
    height, width = 7, 8
    positions = height * width
    x = np.random.default_rng(0).normal(size=(1, height, width, 3)).astype("float32")
    x = np.repeat(x, positions, axis=0)
    stack = Stack(num_blocks, filters=4, kernel_size=kernel_size)
    stack(x)
    # Copy p of the input selects the output at position p, so one gradient
    # gives the dependence of every position (the copies are independent).
    # Outside the causal past every term of a gradient is a zero upstream
    # gradient or a masked-out weight: an exact 0.0 on any machine.
    select = np.eye(positions, dtype="float32").reshape(positions, height, width, 1)
    grad = gradients(stack, x, lambda y: keras.ops.sum(keras.ops.multiply(y, select)))[0]
    seen = np.abs(grad).sum(axis=-1) > 0
    for p in range(positions):
        i, j = divmod(p, width)
        expected = expected_dependence(height, width, i, j, num_blocks, kernel_size)
        np.testing.assert_array_equal(seen[p], expected, err_msg=f"position {(i, j)}")


def test_vertical_stack_never_sees_the_current_row_or_below():
    x = np.random.default_rng(1).normal(size=(1, 5, 5, 2)).astype("float32")
    block_a, block_b = GatedPixelCNNBlock("A", 3), GatedPixelCNNBlock("B", 3)

    class Vertical(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b = block_a, block_b

        def call(self, x, training=None):
            return self.b(self.a((x, x)))[0]

    vertical = Vertical()
    vertical(x)
    grad = gradients(vertical, x, lambda y: keras.ops.sum(y[:, 2, 2, :]))[0]
    seen = np.abs(grad).sum(axis=(0, 3)) > 0
    assert not seen[2:].any()
    assert seen[:2].all()


def test_horizontal_stack_on_one_row_equals_that_row_of_the_whole_block():
    x = np.random.default_rng(7).normal(size=(2, 5, 6, 4)).astype("float32")
    labels = np.array([0, 1], dtype="int32")
    block = GatedPixelCNNBlock("B", filters=4, num_classes=2)
    vertical, horizontal = (to_numpy(t) for t in block((x, x), labels=labels))
    vertical_out, pre_activation = block.vertical_stack(x, labels)
    np.testing.assert_allclose(to_numpy(vertical_out), vertical, atol=1e-6)
    row = block.horizontal_stack(x[:, 3:4], pre_activation[:, 3:4], labels)
    np.testing.assert_allclose(to_numpy(row), horizontal[:, 3:4], atol=1e-5)


def randomize_weights(layer, seed):
    """Every weight random (biases are zeros when built), so that a step that
    forgot one differs."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_row_and_position_steps_equal_the_whole_block(mask_type):
    # What a sampler runs: the vertical stack on one row from the padded
    # rows it sees, the horizontal stack on one position from the columns
    # up to it. Tolerance: matrix products of other shapes than the
    # convolutions may round differently in the last bits.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    condition = rng.normal(size=(2, 5, 6, 3)).astype("float32")
    labels = np.array([1, 0], dtype="int32")
    kernel_size, half = 5, 2
    block = GatedPixelCNNBlock(
        mask_type, filters=4, kernel_size=kernel_size, num_classes=2, condition_channels=3
    )
    block((x, x), labels, condition)  # builds it
    randomize_weights(block, seed=4)
    vertical, horizontal = (to_numpy(t) for t in block((x, x), labels, condition))
    top, side = block.vertical_padding()
    assert (top, side) == (half + (mask_type == "A"), half)
    padded = np.pad(x, ((0, 0), (top, 0), (side, side), (0, 0)))
    weights = block.position_weights()
    left_padded = np.pad(x, ((0, 0), (0, 0), (half, 0), (0, 0)))
    for row in range(5):
        window = padded[:, row : row + half + 1]
        row_condition = condition[:, row : row + 1]
        output, pre_activation = block.vertical_stack_row(window, labels, row_condition)
        np.testing.assert_allclose(to_numpy(output)[:, 0], vertical[:, row], atol=1e-5)
        terms = block.horizontal_row_terms(pre_activation, labels, row_condition)
        for column in range(6):
            window = left_padded[:, row, column : column + half + 1].reshape(2, -1)
            step = block.horizontal_stack_position(window, terms[:, 0, column], weights)
            np.testing.assert_allclose(to_numpy(step), horizontal[:, row, column], atol=1e-5)


def test_output_shapes_and_residual_of_type_b():
    x = np.random.default_rng(2).normal(size=(2, 4, 5, 6)).astype("float32")
    block = GatedPixelCNNBlock("B", filters=6)
    vertical, horizontal = block((x, x))
    assert tuple(vertical.shape) == tuple(horizontal.shape) == (2, 4, 5, 6)
    assert block.compute_output_shape(((2, 4, 5, 6), (2, 4, 5, 6))) == ((2, 4, 5, 6),) * 2
    # With the output convolution zeroed, the horizontal stack is the identity.
    block.horizontal_output.set_weights([np.zeros((1, 1, 6, 6)), np.zeros(6)])
    np.testing.assert_allclose(to_numpy(block((x, x))[1]), x, atol=1e-6)


def test_gates_are_tanh_times_sigmoid():
    x = np.random.default_rng(3).normal(size=(2, 3, 3, 2)).astype("float32")
    block = GatedPixelCNNBlock("A", filters=2, kernel_size=1)
    vertical, horizontal = block((x, x))
    # Kernel size 1, type A: the vertical stack sees the pixel above only.
    kernel, bias = (to_numpy(w) for w in block.vertical_conv.weights)
    above = np.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    pre = above @ kernel[0, 0] + bias
    expected = np.tanh(pre[..., :2]) / (1.0 + np.exp(-pre[..., 2:]))
    np.testing.assert_allclose(to_numpy(vertical), expected, atol=1e-5)


def test_class_bias_changes_the_output_and_labels_are_checked():
    x = np.random.default_rng(4).normal(size=(2, 4, 4, 3)).astype("float32")
    block = GatedPixelCNNBlock("A", filters=3, num_classes=5)
    block.build(((None, 4, 4, 3), (None, 4, 4, 3)))
    table = np.random.default_rng(5).normal(size=(5, 6)).astype("float32")
    block.class_embedding.set_weights([table])
    same = block((x, x), labels=np.array([1, 1], dtype="int32"))[1]
    other = block((x, x), labels=np.array([1, 4], dtype="int32"))[1]
    np.testing.assert_allclose(to_numpy(same)[0], to_numpy(other)[0], atol=1e-6)
    assert np.abs(to_numpy(same)[1] - to_numpy(other)[1]).max() > 1e-3
    with pytest.raises(ValueError, match="labels are required"):
        block((x, x))
    with pytest.raises(ValueError, match="labels are not accepted"):
        GatedPixelCNNBlock("A", filters=3)((x, x), labels=np.array([0, 1]))


def test_spatial_condition_is_added_everywhere_and_checked():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    condition = rng.normal(size=(2, 4, 4, 5)).astype("float32")
    block = GatedPixelCNNBlock("A", filters=3, condition_channels=5)
    vertical, horizontal = block((x, x), condition=condition)
    # The projected condition is a bias of the vertical pre-activation: the
    # NumPy gate of (shifted convolution + 1x1 projection of the condition).
    _, pre_activation = block.vertical_stack(x, condition=condition)
    kernel, bias = (to_numpy(w) for w in block.condition_projection.weights)
    pre = to_numpy(pre_activation) + condition @ kernel[0, 0] + bias
    expected = np.tanh(pre[..., :3]) / (1.0 + np.exp(-pre[..., 3:]))
    np.testing.assert_allclose(to_numpy(vertical), expected, atol=1e-5)
    # The condition may be seen at every position, the first one included.
    changed = condition.copy()
    changed[:, 3, 3] += 1.0
    other = to_numpy(block((x, x), condition=changed)[1])
    assert np.abs(other[:, 3, 3] - to_numpy(horizontal)[:, 3, 3]).max() > 1e-4
    np.testing.assert_allclose(other[:, :3], to_numpy(horizontal)[:, :3], atol=1e-6)
    with pytest.raises(ValueError, match="condition_channels=5: a condition is required"):
        block((x, x))
    with pytest.raises(ValueError, match="condition_channels=None: a condition is not accepted"):
        GatedPixelCNNBlock("A", filters=3)((x, x), condition=condition)


def test_config_round_trip_gives_identical_outputs():
    x = np.random.default_rng(6).normal(size=(2, 4, 4, 3)).astype("float32")
    labels = np.array([0, 2], dtype="int32")
    condition = np.random.default_rng(8).normal(size=(2, 4, 4, 2)).astype("float32")
    block = GatedPixelCNNBlock(
        "A", filters=3, kernel_size=5, num_classes=3, condition_channels=2, name="gated"
    )
    expected = [to_numpy(t) for t in block((x, x), labels=labels, condition=condition)]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(block))
    assert restored.get_config() == block.get_config()
    restored.set_weights(block.get_weights())
    for got, want in zip(restored((x, x), labels=labels, condition=condition), expected):
        np.testing.assert_allclose(to_numpy(got), want, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mask_type": "C"}, "mask_type='C'"),
        ({"filters": 0}, "filters=0"),
        ({"kernel_size": 4}, "kernel_size=4"),
        ({"num_classes": -1}, "num_classes=-1"),
        ({"condition_channels": 0}, "condition_channels=0"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GatedPixelCNNBlock(**{"mask_type": "A", "filters": 4, **kwargs})


def test_bad_input_shapes_raise():
    x = np.zeros((1, 4, 4, 3), dtype="float32")
    with pytest.raises(ValueError, match="filters=4 channels"):
        GatedPixelCNNBlock("B", filters=4)((x, x))
    with pytest.raises(ValueError, match="pair"):
        GatedPixelCNNBlock("A", filters=4).build(((None, 4, 4, 3),))
