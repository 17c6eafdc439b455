import keras
from keras import layers, ops

from vqkeras import validation

# keras.applications.imagenet_utils.preprocess_input's modes, and "unit" for
# vqkeras's classifiers (images on [0, 1]), from images on the [-1, 1] scale.
PREPROCESSING = ("tf", "caffe", "torch", "unit")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_RGB_MEAN = (0.485, 0.456, 0.406)
TORCH_RGB_STD = (0.229, 0.224, 0.225)
LPIPS_VGG16_LAYERS = (
    "block1_conv2",
    "block2_conv2",
    "block3_conv3",
    "block4_conv3",
    "block5_conv3",
)


@keras.saving.register_keras_serializable(package="vqkeras")
class PerceptualLoss(layers.Layer):
    """LPIPS-style perceptual distance between two batches of images.

    The activations of a few layers of a feature network (VGG16 for LPIPS)
    are compared instead of pixels. For each layer l with activations
    `f_l (B, h, w, C_l)` of the two images:

        d_l = mean over positions and channels of
              (f_l(x) / (|f_l(x)| + eps) - f_l(y) / (|f_l(y)| + eps)) ** 2

    where |.| is the L2 norm over channels at each position; the distance is
    the sum of d_l over the layers. LPIPS weighs the channels with learned
    weights (and sums over them); this takes their plain mean, so each
    layer's d_l lies in [0, 4].

    The feature network is frozen: its weights are not trainable, so they
    are not among the trainable variables of a model that holds this loss
    (nor, as the layers are shared, of `feature_model` itself). Only the part
    up to the chosen layers is kept (and saved). It computes in float32
    whatever the dtype policy, as loss terms do in vqkeras: a feature model
    with float16 or bfloat16 layers is copied with float32 layers (in
    float16, the gradient of the channel normalisation overflows where the
    activations are near 0, and the loss turns NaN).

    Pixel range: images on the [-1, 1] scale, the scale of the autoencoders'
    encoder inputs and decoder outputs. `preprocessing` maps them to what
    the feature network expects, as `keras.applications`'
    `preprocess_input(x, mode=...)` does from [0, 255]: "tf" keeps [-1, 1],
    "caffe" gives BGR in [0, 255] minus the ImageNet mean (Keras's VGG16 and
    VGG19), "torch" gives RGB in [0, 1] standardised by the ImageNet mean and
    std, "unit" gives [0, 1] (the classifiers of the zoo, such as
    `mnist_classifier`). Grayscale images are repeated to three channels when the network
    takes three.

    Args:
        feature_model: a functional Keras model (e.g.
            `keras.applications.VGG16(include_top=False)`), or a
            `Sequential` model with a known input shape.
        layer_names: names of the layers of `feature_model` whose outputs
            are compared.
        preprocessing: "tf", "caffe", "torch" or "unit", see above.
        epsilon: added to the channel norms before dividing.
        **kwargs: base layer keyword arguments.

    Call arguments:
        x: images `(B, H, W, C)` on the [-1, 1] scale.
        y: images of the same shape.

    Returns:
        float32 distances `(B,)`: 0 for identical images, symmetric in x, y.

    Example:

    ```python
    perceptual = vqkeras.layers.PerceptualLoss.from_vgg16()  # ImageNet weights
    distance = perceptual(images * 2.0 - 1.0, reconstructions * 2.0 - 1.0)  # (B,)
    ```

    Reference:
        Zhang et al., "The Unreasonable Effectiveness of Deep Features as a
        Perceptual Metric", CVPR 2018; Johnson et al., "Perceptual Losses for
        Real-Time Style Transfer and Super-Resolution", ECCV 2016.
    """

    def __init__(self, feature_model, layer_names, preprocessing="tf", epsilon=1e-10, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(feature_model, keras.Model) or not _has_graph(feature_model):
            raise TypeError(
                "`feature_model` must be a functional Keras model (or a Sequential model with "
                f"a known input shape). Received: {feature_model!r}"
            )
        if isinstance(layer_names, str):
            layer_names = (layer_names,)
        self.layer_names = tuple(layer_names)
        if not self.layer_names:
            raise ValueError("`layer_names` must name at least one layer. Received: []")
        known = [layer.name for layer in feature_model.layers]
        unknown = [name for name in self.layer_names if name not in known]
        if unknown:
            raise ValueError(
                f"`layer_names` {unknown} are not layers of the feature model "
                f"'{feature_model.name}'. Its layers: {known}"
            )
        if preprocessing not in PREPROCESSING:
            raise ValueError(
                f"`preprocessing` must be one of {list(PREPROCESSING)}. "
                f"Received: preprocessing={preprocessing!r}"
            )
        self.preprocessing = preprocessing
        self.epsilon = validation.float_in_range(
            "epsilon", epsilon, 0.0, float("inf"), high_inclusive=False
        )
        self.feature_channels = feature_model.inputs[0].shape[-1]
        feature_model = _float32_model(feature_model)
        self.extractor = keras.Model(
            feature_model.inputs,
            [feature_model.get_layer(name).output for name in self.layer_names],
            name=feature_model.name,
        )
        self.extractor.trainable = False

    @classmethod
    def from_vgg16(cls, weights="imagenet", layer_names=LPIPS_VGG16_LAYERS, **kwargs):
        """The LPIPS setting: Keras's VGG16 (`include_top=False`), the last
        convolution of each of its five blocks, "caffe" preprocessing.

        Args:
            weights: "imagenet" (downloaded by Keras on first use, then
                cached in ~/.keras/models), None (random weights: for tests
                only, it measures nothing perceptual) or a weights file path.
            layer_names: the VGG16 layers compared.
            **kwargs: other `PerceptualLoss` arguments (`epsilon`, `name`).
        """
        vgg16 = keras.applications.VGG16(
            weights=weights, include_top=False, input_shape=(None, None, 3)
        )
        return cls(vgg16, layer_names, preprocessing="caffe", **kwargs)

    @classmethod
    def from_classifier(cls, classifier, layer_names=None, **kwargs):
        """A distance in the features of an image classifier that takes
        images on [0, 1], such as the zoo's `mnist_classifier`: the offline
        choice where ImageNet's VGG16 cannot be downloaded or does not suit
        the images (digits).

        Args:
            classifier: a preset name or folder (loaded with
                `vqkeras.from_preset`), or a functional Keras model.
            layer_names: the layers compared (default: every `Conv2D`
                layer, in order).
            **kwargs: other `PerceptualLoss` arguments (`epsilon`, `name`).
        """
        if not isinstance(classifier, keras.Model):
            from vqkeras.presets import from_preset

            classifier = from_preset(classifier)
        if layer_names is None:
            layer_names = [
                layer.name for layer in classifier.layers if isinstance(layer, layers.Conv2D)
            ]
            if not layer_names:
                raise ValueError(
                    f"The classifier '{classifier.name}' has no Conv2D layer to compare: "
                    "pass `layer_names`."
                )
        return cls(classifier, layer_names, preprocessing="unit", **kwargs)

    def build(self, x_shape, y_shape=None):
        # The extractor is a functional model: built when created.
        pass

    def _preprocess(self, images):
        x = ops.cast(images, "float32")
        if x.shape[-1] == 1 and self.feature_channels == 3:
            x = ops.repeat(x, 3, axis=-1)
        if self.preprocessing == "caffe":
            x = (x + 1.0) * 127.5
            x = ops.flip(x, axis=-1) - ops.convert_to_tensor(CAFFE_BGR_MEAN, "float32")
        elif self.preprocessing == "torch":
            mean = ops.convert_to_tensor(TORCH_RGB_MEAN, "float32")
            std = ops.convert_to_tensor(TORCH_RGB_STD, "float32")
            x = ((x + 1.0) / 2.0 - mean) / std
        elif self.preprocessing == "unit":
            x = (x + 1.0) / 2.0
        return ops.cast(x, self.extractor.compute_dtype)

    def _unit_features(self, images):
        features = self.extractor(self._preprocess(images))
        if not isinstance(features, (list, tuple)):
            features = [features]
        unit = []
        for f in features:
            f = ops.cast(f, "float32")
            norm = ops.sqrt(ops.sum(ops.square(f), axis=-1, keepdims=True))
            unit.append(f / (norm + self.epsilon))
        return unit

    def call(self, x, y):
        if tuple(x.shape[1:]) != tuple(y.shape[1:]):
            raise ValueError(
                "PerceptualLoss compares images of the same shape. "
                f"Received shapes {tuple(x.shape)} and {tuple(y.shape)}."
            )
        size = tuple(self.extractor.inputs[0].shape[1:3])
        if any(s is not None and r is not None and s != r for s, r in zip(size, x.shape[1:3])):
            raise ValueError(
                f"The feature model '{self.extractor.name}' takes images of {size[0]}x{size[1]} "
                f"pixels. Received images of shape {tuple(x.shape)}."
            )
        distance = 0.0
        for fx, fy in zip(self._unit_features(x), self._unit_features(y)):
            distance = distance + ops.mean(ops.square(fx - fy), axis=(1, 2, 3))
        return distance

    def compute_output_shape(self, x_shape, y_shape=None):
        return (x_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                # The extractor keeps the feature model up to the compared
                # layers, under their names: it is a feature model too.
                "feature_model": keras.saving.serialize_keras_object(self.extractor),
                "layer_names": list(self.layer_names),
                "preprocessing": self.preprocessing,
                "epsilon": self.epsilon,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["feature_model"] = keras.saving.deserialize_keras_object(config["feature_model"])
        return cls(**config)


def _float32_model(model):
    """`model`, or a copy with float32 layers and the same weights if some of
    its layers compute in another dtype."""
    computing = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if all(layer.dtype_policy.name == "float32" for layer in computing):
        return model

    def float32_layer(layer):
        return type(layer).from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    return copy


def _has_graph(model):
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False
