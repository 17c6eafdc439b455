import keras
import numpy as np
from keras import ops

from vqkeras.models import LossTermsModel


class Regression(LossTermsModel):
    """y = x w with an L2 penalty: two named terms, no backend code."""

    def __init__(self, **kwargs):
        super().__init__(loss_names=("fit_loss", "penalty"), **kwargs)
        self.dense = keras.layers.Dense(1, use_bias=False)

    def call(self, x):
        return self.dense(x)

    def compute_losses(self, data, training=False):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        error = ops.mean(ops.square(self(x) - y))
        return {"fit_loss": error, "penalty": 0.01 * ops.sum(ops.square(self.dense.kernel))}, {}


def test_named_terms_train_and_log_on_every_backend():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 3)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5]], "float32")
    model = Regression()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    assert sorted(history.history) == ["fit_loss", "loss", "penalty"]
    assert history.history["fit_loss"][-1] < 0.05 * history.history["fit_loss"][0]

    # Logged values are per-sample means of the terms, checked against NumPy
    # with a last batch of a different size.
    logs = model.evaluate(x[:80], y[:80], batch_size=32, verbose=0, return_dict=True)
    kernel = model.dense.kernel.numpy()
    np.testing.assert_allclose(
        logs["fit_loss"], ((x[:80] @ kernel - y[:80]) ** 2).mean(), rtol=1e-4
    )
    np.testing.assert_allclose(logs["penalty"], 0.01 * (kernel**2).sum(), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], logs["fit_loss"] + logs["penalty"], rtol=1e-4)
