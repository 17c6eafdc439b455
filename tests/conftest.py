"""Shared test helpers. The suite runs once per backend: KERAS_BACKEND=tensorflow|jax|torch."""

import dataclasses
import os
import zlib

# XLA compiles every new shape with LLVM at full optimisation, and for the
# suite's tiny models that compilation is most of a JAX test's time (building
# a small VQ-VAE's initializers: 18 s, against 1.6 s at level 0; the family
# contract's fit tests run twice as fast). The suite checks results, not speed.
# Set before Keras imports JAX. (TensorFlow's XLA is left alone: no gain measured there.)
if os.environ.get("KERAS_BACKEND") == "jax" and "xla_backend_optimization_level" not in (
    os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

# Under pytest-xdist (`pytest -n 2`) each worker gets its share of the cores:
# a backend in each worker spreading over all of them would oversubscribe the
# machine, and PyTorch's and oneDNN's OpenMP threads wait for one another
# badly then. Set before the backends start their thread pools.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(_name, _threads)
    if os.environ.get("KERAS_BACKEND") == "jax" and _threads == "1":
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
        )

import keras  # noqa: E402
import numpy as np
import pytest

from vqkeras.layers import ConvDecoder, ConvEncoder, EMAVectorQuantizer, VectorQuantizer
from vqkeras.models import VQVAE, LossTermsModel
from vqkeras.models.optimizer_groups import OptimizerGroup

BACKENDS = ("tensorflow", "jax", "torch")


def pytest_addoption(parser):
    parser.addoption(
        "--every-backend",
        action="store_true",
        help="run every slow test on this backend, not only the third this backend owns",
    )


def slow_test_owners(items):
    """The backend whose suite run runs each slow test: the one named by
    `@pytest.mark.slow(backend=...)`, or else the parameters of each slow test
    function dealt out over the three backends in turn (starting from a hash of
    the function's name), so that they run once, not three times."""
    owners, dealt = {}, {}
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is None:
            continue
        function = f"{item.path.name}::{item.originalname}"
        turn = dealt.setdefault(function, zlib.crc32(function.encode()))
        dealt[function] += 1
        owners[item] = marker.kwargs.get("backend") or BACKENDS[turn % len(BACKENDS)]
    return owners


def pytest_collection_modifyitems(config, items):
    if config.getoption("--every-backend"):
        return
    backend = keras.config.backend()
    for item, owner in slow_test_owners(items).items():
        if owner != backend:
            item.add_marker(pytest.mark.skip(reason=f"slow: runs in the {owner} suite run"))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


def subprocess_env(**overrides):
    """The environment for a Python subprocess that must import the vqkeras
    under test: the installed package, or the source tree's when the suite
    runs from a clone with `python -m pytest`."""
    import os

    import vqkeras

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(vqkeras.__file__)))
    path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **overrides)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def gradients(layer, inputs, loss_fn):
    """Gradients of `loss_fn(layer(inputs, training=True))` with respect to
    the inputs and to each trainable weight of `layer`, on any backend."""
    backend = keras.config.backend()
    inputs = np.asarray(inputs, dtype="float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(inputs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_fn(layer(x, training=True))
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        return [to_numpy(g) if g is not None else None for g in grads]
    if backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def stateless_loss(x, trainable):
            outputs, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(outputs)

        trainable = [v.value for v in layer.trainable_variables]
        grad_x, grad_w = jax.grad(stateless_loss, argnums=(0, 1))(inputs, trainable)
        return [to_numpy(grad_x), *[to_numpy(g) for g in grad_w]]
    import torch

    x = torch.tensor(inputs, requires_grad=True)
    for v in layer.trainable_variables:
        v.value.grad = None
    loss_fn(layer(x, training=True)).backward()
    grads = [x.grad, *[v.value.grad for v in layer.trainable_variables]]
    return [to_numpy(g) if g is not None else None for g in grads]


def blob_images(n, size=16, channels=1, seed=0):
    """Learnable synthetic uint8 images: one bright rectangle on a dark background."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, channels), dtype="uint8")
    for image in images:
        top, left = rng.integers(0, size // 2, size=2)
        height, width = rng.integers(size // 4, size // 2, size=2)
        image[top : top + height, left : left + width] = rng.integers(150, 256, size=channels)
    return images


def small_vqvae(quantizer="ema", channels=1, num_embeddings=16, latent_dim=8, **quantizer_kwargs):
    """A VQ-VAE small enough for fast tests: 16x16 images to a 4x4 grid."""
    if quantizer == "ema":
        quantizer = EMAVectorQuantizer(num_embeddings, latent_dim, seed=3, **quantizer_kwargs)
    else:
        quantizer = VectorQuantizer(num_embeddings, latent_dim, **quantizer_kwargs)
    return VQVAE(
        encoder=ConvEncoder(latent_dim, channels=(8, 16), num_residual_blocks=1),
        decoder=ConvDecoder(channels, channels=(16, 8), num_residual_blocks=1),
        quantizer=quantizer,
    )


def options_of(family, **options):
    """The `options` that `family` (a name of `vqkeras.families.FAMILIES`)
    has: sizes shared by a test over several families."""
    from vqkeras.families import FAMILIES

    names = FAMILIES[family].Options.names()
    return {name: value for name, value in options.items() if name in names}


@pytest.fixture
def tiny_family():
    """The name of an autoencoder family registered for one test: an
    `Autoencoder` that halves the image size once more than its architecture's
    `channels` say, with 3 latent channels unless told otherwise."""
    from vqkeras.families import registry
    from vqkeras.families.autoencoders import AutoencoderFamily, LatentOptions
    from vqkeras.families.options import option
    from vqkeras.models import Autoencoder

    @dataclasses.dataclass(frozen=True)
    class TinyOptions(LatentOptions):
        latent_dim: int = option(3, "latent channels", parse=int)

    @registry.register_family("tiny-ae")
    class TinyFamily(AutoencoderFamily):
        """An Autoencoder with one more halving."""

        Options = TinyOptions
        extra_downsampling = 1

        def build(self, parts, options):
            channels = parts.architecture.options.channels
            encoder = ConvEncoder(options.latent_dim, channels=(*channels, 4))
            decoder = ConvDecoder(parts.image_shape[-1], channels=(4, *channels[::-1]))
            return Autoencoder(encoder, decoder, name=parts.name)

    yield "tiny-ae"
    # There is no public way back: families are registered for good.
    del registry._REGISTRY["tiny-ae"]


def model_outputs(model, images):
    """What must agree across backends: reconstructions and any code indices."""
    outputs = {"reconstruction": np.asarray(model.predict(images, verbose=0))}
    if hasattr(model, "encode_indices"):
        indices = model.encode_indices(images)
        named = indices if isinstance(indices, dict) else {"indices": indices}
        outputs.update({f"indices_{k}": to_numpy(v) for k, v in named.items()})
    return outputs


# Run in a fresh interpreter per backend: the backend is fixed at import.
LOAD_AND_PREDICT = """
import json, sys
import keras, numpy as np
import vqkeras  # registers the classes
tests_dir, config, weights, images, out = sys.argv[1:]
sys.path.insert(0, tests_dir)
from conftest import model_outputs
with open(config) as f:
    model = keras.saving.deserialize_keras_object(json.load(f))
images = np.load(images)
model.build(images.shape)
model.load_weights(weights)
np.savez(out, **model_outputs(model, images))
"""


def assert_weights_load_on_other_backends(model, images, tmp_path):
    """Saves `model`'s config and .weights.h5, loads them under the two other
    backends in subprocesses and checks they give the same outputs."""
    import json
    import os
    import subprocess
    import sys

    model.save_weights(tmp_path / "model.weights.h5")
    (tmp_path / "config.json").write_text(json.dumps(keras.saving.serialize_keras_object(model)))
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "load.py").write_text(LOAD_AND_PREDICT)
    expected = model_outputs(model, images)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    for backend in {"tensorflow", "jax", "torch"} - {keras.config.backend()}:
        args = [tests_dir, "config.json", "model.weights.h5", "images.npy", f"{backend}.npz"]
        result = subprocess.run(
            [sys.executable, "load.py", *args],
            cwd=tmp_path,
            env=subprocess_env(KERAS_BACKEND=backend),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{backend}:\n{result.stderr[-3000:]}"
        loaded = np.load(tmp_path / f"{backend}.npz")
        assert sorted(loaded.files) == sorted(expected), backend
        for key, value in expected.items():
            if key.startswith("indices"):
                # Backends round convolutions differently in the last bits, so
                # a vector almost equidistant from two codes may pick either;
                # the reconstructions above still agree.
                agreement = np.mean(loaded[key] == value)
                assert agreement >= 0.95, f"{backend} {key}: {agreement:.1%} equal"
            else:
                np.testing.assert_allclose(loaded[key], value, atol=2e-5, err_msg=backend)


class GeneratorCritic(LossTermsModel):
    """Two optimizer groups trained against each other, small enough for
    NumPy references: a linear generator fitted to targets and pushed up by
    a linear critic, which learns with a hinge loss to score the targets
    above 1 and the generator's outputs below -1. The generator's critic term
    is weighted adaptively as VQGAN's is: ||grad fit_loss|| /
    (||grad generator_loss|| + 1e-4) at the generator's kernel."""

    def __init__(self, features=4, **kwargs):
        super().__init__(loss_names=("fit_loss", "generator_loss", "critic_loss"), **kwargs)
        self.generator = keras.layers.Dense(features, name="generator")
        self.critic = keras.layers.Dense(1, name="critic")
        self.adaptive_weight = keras.metrics.Mean(name="adaptive_weight")

    @property
    def optimizer_groups(self):
        return (
            OptimizerGroup("generator", ("fit_loss", "generator_loss")),
            OptimizerGroup("critic", ("critic_loss",), layers=("critic",)),
        )

    def build(self, input_shape):
        self.generator.build(input_shape)
        self.critic.build(input_shape)

    def call(self, x):
        return self.generator(x)

    def compute_losses(self, data, training=False):
        x, target = data
        # Loss terms in float32 whatever the policy.
        fake = keras.ops.cast(self.generator(x), "float32")
        real_scores = keras.ops.cast(self.critic(target), "float32")
        fake_scores = keras.ops.cast(self.critic(keras.ops.stop_gradient(fake)), "float32")
        terms = {
            "fit_loss": keras.ops.mean(keras.ops.square(fake - target)),
            "generator_loss": -keras.ops.mean(keras.ops.cast(self.critic(fake), "float32")),
            "critic_loss": keras.ops.mean(keras.ops.relu(1.0 - real_scores))
            + keras.ops.mean(keras.ops.relu(1.0 + fake_scores)),
        }
        return terms, {}

    def adaptive_loss_weights(self, terms, gradient_norm):
        kernel = self.generator.kernel
        fit_norm = gradient_norm(["fit_loss"], kernel)
        return {"generator_loss": fit_norm / (gradient_norm(["generator_loss"], kernel) + 1e-4)}

    @property
    def extra_metrics(self):
        return [self.adaptive_weight]

    def update_extra_metrics(self, outputs):
        if "loss_weights" in outputs:
            self.adaptive_weight.update_state(outputs["loss_weights"]["generator_loss"])


def generator_critic_data(n=16, features=4, seed=0):
    """Inputs and targets for `GeneratorCritic`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    target = (x @ rng.normal(size=(features, features)) + 0.5).astype("float32")
    return x, target
