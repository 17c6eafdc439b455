"""Test-split metrics of a trained autoencoder, computed the same way everywhere
(model cards, recipes, benchmarks and the command line)."""

import math

import keras
import numpy as np

from vqkeras import validation
from vqkeras.codes import codes_by_name
from vqkeras.metrics import LOG_FLOOR

# Images (or code grids) per forward pass of the evaluation functions: large
# enough to keep a CPU busy, small enough for a model card's 10000 test images.
EVALUATION_BATCH_SIZE = 500

# SSIM's constants, those of its paper and of `tf.image.ssim`: an 11x11
# Gaussian window of sigma 1.5, K1 and K2.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _batches(array, batch_size):
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


def _gaussian_window(size, sigma):
    """A normalised Gaussian window of `size` taps."""
    coords = np.arange(size) - (size - 1) / 2.0
    window = np.exp(-0.5 * np.square(coords / sigma))
    return window / window.sum()


def _filter_valid(x, axis, window):
    """`x` filtered with `window` along `axis`, VALID (no padding): the sum of
    its shifted copies, one per tap, so the work grows with the pixels
    (a 2048x2048 image takes seconds)."""
    length = x.shape[axis] - len(window) + 1

    def shifted(tap):
        index = [slice(None)] * x.ndim
        index[axis] = slice(tap, tap + length)
        return x[tuple(index)]

    result = window[0] * shifted(0)
    for tap in range(1, len(window)):
        result += window[tap] * shifted(tap)
    return result


def ssim_per_image(images, reconstructions, batch_size=EVALUATION_BATCH_SIZE):
    """Mean SSIM of each image pair on the [0, 1] scale, as `tf.image.ssim`
    with `max_val=1` computes it, without TensorFlow.

    The SSIM of Wang et al.: local means, variances and covariance under an
    11x11 Gaussian window of sigma 1.5 (VALID filtering, no padding), K1 0.01
    and K2 0.03, the map averaged over the positions and the channels.

    Args:
        images: `(N, H, W, C)` on the [0, 1] scale, H and W at least 11.
        reconstructions: the same shape.
        batch_size: images per vectorised step (bounds the memory used).

    Returns:
        float64 `(N,)`.

    Reference:
        Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from
        error visibility to structural similarity", IEEE TIP 2004.
    """
    x = np.asarray(images, "float64")
    y = np.asarray(reconstructions, "float64")
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            "Expected two image batches of one shape (N, height, width, channels). "
            f"Received shapes {x.shape} and {y.shape}."
        )
    if min(x.shape[1:3]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (its window). "
            f"Received shape {x.shape}."
        )
    # The 2-D Gaussian window is the product of two 1-D ones: filter the
    # heights, then the widths.
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K max_val)^2 with max_val 1
    result = []
    for a, b in zip(_batches(x, batch_size), _batches(y, batch_size)):
        # One statistic at a time: a large image's copies stay few.
        mean_x, mean_y, mean_xy, mean_xx_yy = (
            _filter_valid(_filter_valid(stat, 1, window), 2, window)  # (n, H', W', C)
            for stat in (a, b, a * b, np.square(a) + np.square(b))
        )
        # Luminance (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1) times contrast-structure
        # (2 cov_xy + c2) / (var_x + var_y + c2), the (co)variances biased, as in TF.
        num0 = 2.0 * mean_x * mean_y
        den0 = np.square(mean_x) + np.square(mean_y)
        luminance = (num0 + c1) / (den0 + c1)
        contrast_structure = (2.0 * mean_xy - num0 + c2) / (mean_xx_yy - den0 + c2)
        result.append(np.mean(luminance * contrast_structure, axis=(1, 2, 3)))
    return np.concatenate(result) if result else np.zeros((0,))


def encode_indices(model, images, batch_size=EVALUATION_BATCH_SIZE):
    """`model.encode_indices` over `images` in batches, as int32 NumPy arrays
    in the structure `encode_indices` gives (one array, or a dict of them for
    a model with several grids, like `VQVAE2`)."""
    batches = [model.encode_indices(batch) for batch in _batches(images, batch_size)]
    return keras.tree.map_structure(
        lambda *parts: np.concatenate([keras.ops.convert_to_numpy(p) for p in parts]).astype(
            "int32"
        ),
        *batches,
    )


def code_statistics(indices, num_embeddings):
    """Usage and perplexity of a codebook over int `indices` (any shape but
    the batch axis first), and the size of the codes per image in bits."""
    counts = np.bincount(indices.ravel(), minlength=num_embeddings)
    probs = counts[counts > 0] / counts.sum()
    return {
        "codebook_usage": float(np.mean(counts > 0)),
        "perplexity": float(np.exp(-np.sum(probs * np.log(probs)))),
        "latent_grid": list(indices.shape[1:]),
        "bits_per_image": float(math.prod(indices.shape[1:]) * math.log2(num_embeddings)),
    }


def psnr_db(mse):
    """PSNR in dB, `-10 log10 MSE`, of MSEs on the [0, 1] scale (a number or
    an array, e.g. one per image)."""
    # An exact reconstruction would have an infinite PSNR: floor the MSE.
    return -10.0 * np.log10(np.maximum(mse, LOG_FLOOR))


def per_image_metrics(images, reconstructions):
    """MSE, PSNR and SSIM of each reconstruction against its image, for
    images of any sizes, measured as `reconstruction_metrics` measures them.

    Args:
        images: a sequence of `(H, W, C)` images (a list, or one array
            `(N, H, W, C)`), uint8 in [0, 255] or float in [0, 1].
        reconstructions: float images on the [0, 1] scale of the same
            shapes; clipped to [0, 1] here.

    Returns:
        A dict of float64 arrays `(N,)`: `mse`, `psnr_db` and `ssim`, which
        is NaN for an image smaller than SSIM's 11x11 window.
    """
    if len(images) != len(reconstructions):
        raise ValueError(
            f"Expected one reconstruction per image: {len(images)} images, "
            f"{len(reconstructions)} reconstructions."
        )
    targets = [validation.to_unit_range(np.asarray(image)) for image in images]
    outputs = [np.clip(np.asarray(output, "float32"), 0.0, 1.0) for output in reconstructions]
    by_shape = {}
    for index, (target, output) in enumerate(zip(targets, outputs)):
        if target.shape != output.shape:
            raise ValueError(
                f"Image {index}: expected a reconstruction of its shape {target.shape}. "
                f"Received shape={output.shape}."
            )
        by_shape.setdefault(target.shape, []).append(index)
    mse = np.array([np.mean(np.square(o - t)) for t, o in zip(targets, outputs)], "float64")
    ssim = np.full(len(targets), np.nan)
    for shape, indices in by_shape.items():
        if min(shape[:2]) >= SSIM_WINDOW:
            ssim[indices] = ssim_per_image(
                np.stack([targets[i] for i in indices]), np.stack([outputs[i] for i in indices])
            )
    return {"mse": mse, "psnr_db": psnr_db(mse), "ssim": ssim}


def reconstruction_metrics(images, reconstructions):
    """MSE, PSNR and SSIM of `reconstructions` against `images`, measured as
    `evaluate_reconstructions` does, for reconstructions made another way
    (e.g. `RQVAE.decode_indices(codes[..., :k])`).

    Args:
        images: uint8 in [0, 255] or float in [0, 1], `(N, H, W, C)`.
        reconstructions: float `(N, H, W, C)` on the [0, 1] scale (a tensor or
            an array); clipped to [0, 1] here.

    Returns:
        A dict: `images`, `mse`, `psnr_db`, `psnr_std_db`, `ssim`.
    """
    images = np.asarray(images)
    target = validation.to_unit_range(images)
    reconstructions = np.clip(keras.ops.convert_to_numpy(reconstructions), 0.0, 1.0)
    if reconstructions.shape != target.shape:
        raise ValueError(
            f"Expected reconstructions of the images' shape {target.shape}. "
            f"Received shape={reconstructions.shape}."
        )
    mse = np.mean(np.square(reconstructions - target), axis=(1, 2, 3))
    psnr = psnr_db(mse)
    return {
        "images": len(images),
        "mse": float(np.mean(mse)),
        "psnr_db": float(np.mean(psnr)),
        "psnr_std_db": float(np.std(psnr)),
        "ssim": float(np.mean(ssim_per_image(target, reconstructions))),
    }


def evaluate_reconstructions(model, images, batch_size=EVALUATION_BATCH_SIZE):
    """Reconstruction metrics, plus code statistics for discrete models.

    Reconstructions are clipped to [0, 1] (as when they are saved as images)
    before anything is measured.

    Args:
        model: a vqkeras autoencoder.
        images: uint8 in [0, 255] or float in [0, 1], `(N, H, W, C)`.
        batch_size: images per forward pass.

    Returns:
        A dict: `images` (N); `mse` (mean over images of the per-pixel MSE);
        `psnr_db` (mean over images of -10 log10 MSE_i) and `psnr_std_db`;
        `ssim` (mean over images). For models with `encode_indices`:
        `codebook_usage` (fraction of the K codes used at least once over
        all N images), `perplexity` (exp of the entropy of that histogram),
        `latent_grid` and `bits_per_image` (grid positions x log2 K: the size
        of the codes stored without entropy coding). For a model with several
        grids (`VQVAE2`), those are given per grid with its name as a prefix
        (`top_codebook_usage`, ...), and `bits_per_image` is their sum.
    """
    images = np.asarray(images)
    model.check_images(images)
    metrics = reconstruction_metrics(
        images, model.predict(images, batch_size=batch_size, verbose=0)
    )
    if model.code_grids():
        metrics.update(codebook_statistics(model, encode_indices(model, images, batch_size)))
    return metrics


def codebook_statistics(model, indices):
    """`code_statistics` of a VQ model's codes, per codebook.

    Args:
        model: the `VQVAE`, `RQVAE` or `VQVAE2` that made `indices`.
        indices: int codes as `encode_indices` returns them (a dict of grids
            for `VQVAE2`).

    Returns:
        For one codebook, the keys of `code_statistics`. With several, those
        of each codebook, named as in the fit logs: `top_codebook_usage`,
        ... for `VQVAE2`; `codebook_usage_0`, ... per level of an `RQVAE`
        (whose `codebook_usage` is then the mean over the levels, and
        `latent_grid` the whole `(h, w, depth)`); `bits_per_image` is the
        total.
    """
    grids = model.code_grids()
    by_name = codes_by_name(grids, indices)
    if len(grids) == 1 and grids[0].depth is None:
        return code_statistics(by_name[grids[0].name], grids[0].num_embeddings)
    parts = {}  # name pattern -> (codes of one codebook, K)
    for grid in grids:
        codes = by_name[grid.name]
        if grid.depth is None:
            parts[f"{grid.name}_{{}}"] = (codes, grid.num_embeddings)
        else:  # one codebook per level, named as in the fit logs
            prefix = "" if len(grids) == 1 else f"{grid.name}_"
            for level in range(codes.shape[-1]):
                parts[f"{prefix}{{}}_{level}"] = (codes[..., level], grid.num_embeddings)
    metrics, bits, usages = {}, 0.0, []
    for name, (codes, num_embeddings) in parts.items():
        statistics = code_statistics(codes, num_embeddings)
        bits += statistics["bits_per_image"]
        usages.append(statistics["codebook_usage"])
        metrics.update({name.format(key): value for key, value in statistics.items()})
    metrics["bits_per_image"] = bits
    if len(grids) == 1:  # stacked codes: their mean usage and whole grid
        metrics["codebook_usage"] = float(np.mean(usages))
        metrics["latent_grid"] = list(by_name[grids[0].name].shape[1:])
    return metrics


def evaluate_prior(prior, codes, labels=None, batch_size=EVALUATION_BATCH_SIZE):
    """Negative log-likelihood of code grids under a prior (a `CodePrior`).

    `codes` are the prior's code grids, or for a prior with a condition grid
    the pair `(codes, condition_codes)`; `labels` the class labels of a
    class-conditional prior.

    Returns:
        A dict: `grids`; `nll_nats_per_code` (mean cross-entropy of each code
        given the codes before it in raster order, and the label for a
        class-conditional prior); `bits_per_dim` (a whole grid's NLL in bits
        over the pixel values of an image) when the prior knows its
        `image_size`. A prior whose loss is not a likelihood (MaskGIT:
        `nll_is_likelihood` False) gives `masked_code_cross_entropy_nats`
        instead of `nll_nats_per_code`: the mean cross-entropy of the codes
        it masks at random (cosine schedule), drawn anew at each call.
    """
    if not prior.compiled:  # a loaded preset: evaluate needs no optimizer
        prior.compile()
    results = prior.evaluate(codes, labels, batch_size=batch_size, verbose=0, return_dict=True)
    grids = len(codes[0]) if isinstance(codes, (tuple, list)) else len(codes)
    name = "nll_nats_per_code" if prior.nll_is_likelihood else "masked_code_cross_entropy_nats"
    metrics = {"grids": grids, name: float(results["nll"])}
    if "bits_per_dim" in results:
        metrics["bits_per_dim"] = float(results["bits_per_dim"])
    return metrics


def conditional_sample_agreement(
    prior, vqvae, classifier, samples_per_class=100, seed=0, temperature=1.0, **options
):
    """Does a class-conditional prior draw the class it is asked for?

    Samples `samples_per_class` code grids for each class, decodes them with
    `vqvae`, and classifies the images (clipped to [0, 1]) with `classifier`,
    a model trained on real images that returns class scores. `options` are
    further options of the prior's `sample` (e.g. `guidance_scale`, `top_k`).

    Returns:
        A dict: `samples`, `agreement` (fraction classified as the requested
        class), `agreement_per_class`, `seed`, `temperature`, and `options`
        when given.
    """
    if not prior.num_classes:
        raise ValueError(f"{prior.name!r} is not class-conditional (num_classes=None).")
    labels = np.repeat(np.arange(prior.num_classes), samples_per_class).astype("int32")
    codes = prior.sample(len(labels), labels=labels, temperature=temperature, seed=seed, **options)
    images = np.clip(keras.ops.convert_to_numpy(vqvae.decode_indices(codes)), 0.0, 1.0)
    predicted = np.argmax(classifier.predict(images, verbose=0), axis=-1)
    hits = predicted == labels
    return {
        "samples": len(labels),
        "agreement": float(np.mean(hits)),
        "agreement_per_class": [
            float(np.mean(hits[labels == c])) for c in range(prior.num_classes)
        ],
        "seed": seed,
        "temperature": temperature,
        **({"options": options} if options else {}),
    }


# -- Fréchet distance in a classifier's features --------------------------------


def feature_layer_name(classifier):
    """The layer of `classifier` whose outputs are its image features: the
    one named "features" (the zoo's classifiers name their penultimate
    layer so), else the last layer before the output layer that is not a
    `Dropout` (`mnist_classifier`: "flatten")."""
    names = [layer.name for layer in classifier.layers]
    if "features" in names:
        return "features"
    candidates = [
        layer.name
        for layer in classifier.layers[:-1]
        if not isinstance(layer, (keras.layers.Dropout, keras.layers.InputLayer))
    ]
    if not candidates:
        raise ValueError(
            f"The classifier '{classifier.name}' has no layer before its output layer to take "
            f"features from. Its layers: {names}"
        )
    return candidates[-1]


def image_features(classifier, images, layer_name=None, batch_size=EVALUATION_BATCH_SIZE):
    """float64 features `(N, F)` of `images` at a layer of `classifier`.

    Args:
        classifier: a functional or `Sequential` Keras model that takes
            images on [0, 1] (the zoo's classifiers).
        images: uint8 in [0, 255] or float in [0, 1], `(N, H, W, C)`.
        layer_name: the layer (default: `feature_layer_name(classifier)`);
            its outputs are flattened per image.
        batch_size: images per forward pass.
    """
    layer_name = feature_layer_name(classifier) if layer_name is None else layer_name
    extractor = keras.Model(classifier.inputs[0], classifier.get_layer(layer_name).output)
    images = np.asarray(images)
    scaled = validation.to_unit_range(images)
    features = extractor.predict(scaled, batch_size=batch_size, verbose=0)
    return np.asarray(features, dtype="float64").reshape(len(images), -1)


def feature_statistics(features):
    """Mean `(F,)` and covariance `(F, F)` (unbiased, float64) of features
    `(N, F)`, N >= 2."""
    features = np.asarray(features, dtype="float64")
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            "Feature statistics need features of shape (N, F) with N >= 2 images. "
            f"Received shape {features.shape}."
        )
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
        features.shape[1], features.shape[1]
    )


def _psd_square_root(matrix):
    """The symmetric square root of a symmetric positive semi-definite
    matrix; eigenvalues below 0 (rounding) count as 0."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mean_a, covariance_a, mean_b, covariance_b):
    """The Fréchet distance between the Gaussians N(mean_a, covariance_a)
    and N(mean_b, covariance_b):

        ||m_a - m_b||^2 + tr(S_a) + tr(S_b) - 2 tr sqrt(S_a^1/2 S_b S_a^1/2)

    in NumPy, from symmetric eigendecompositions (S_a^1/2 S_b S_a^1/2 is
    symmetric positive semi-definite, with the eigenvalues of S_a S_b, so
    no general matrix square root is needed).

    Reference:
        Dowson and Landau, "The Fréchet distance between multivariate
        normal distributions", J. Multivariate Analysis, 1982.
    """
    mean_a, mean_b = (np.asarray(m, dtype="float64") for m in (mean_a, mean_b))
    covariance_a, covariance_b = (
        np.asarray(s, dtype="float64") for s in (covariance_a, covariance_b)
    )
    width = mean_a.shape[-1] if mean_a.ndim == 1 else None
    shapes = [mean_a.shape, mean_b.shape, covariance_a.shape, covariance_b.shape]
    if width is None or shapes != [(width,), (width,), (width, width), (width, width)]:
        raise ValueError(
            "The Fréchet distance needs means (F,) and covariances (F, F) of one feature width F. "
            f"Received shapes: means {shapes[0]} and {shapes[1]}, covariances {shapes[2]} and "
            f"{shapes[3]}."
        )
    root_a = _psd_square_root(covariance_a)
    cross = np.linalg.eigvalsh(root_a @ covariance_b @ root_a)
    trace_root = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    distance = (
        np.sum(np.square(mean_a - mean_b))
        + np.trace(covariance_a)
        + np.trace(covariance_b)
        - 2.0 * trace_root
    )
    return float(max(distance, 0.0))  # rounding may take a zero distance below 0


def frechet_distance_of_images(
    images, other_images, classifier, layer_name=None, batch_size=EVALUATION_BATCH_SIZE
):
    """The Fréchet distance between two sets of images (test images and their
    reconstructions, or samples) in a classifier's features, with its label.

    It is not FID: FID is this distance in ImageNet Inception-v3 features,
    and figures in other features do not compare with FID's.

    Args:
        images, other_images: uint8 in [0, 255] or float in [0, 1],
            `(N, H, W, C)` of the classifier's input size; at least 2 each.
        classifier: a classifier preset name or folder (e.g.
            "mnist_classifier"), or a Keras model, taking images on [0, 1].
        layer_name: its layer whose outputs are the features (default:
            `feature_layer_name`).
        batch_size: images per forward pass.

    Returns:
        A dict: `frechet_distance`, `features` ("<classifier>/<layer>"),
        `images` and `other_images` (the counts).
    """
    if isinstance(classifier, keras.Model):
        model, label = classifier, classifier.name
    else:
        from vqkeras.presets import from_preset

        model, label = from_preset(classifier), str(classifier)
    layer_name = feature_layer_name(model) if layer_name is None else layer_name
    for name, array in (("images", images), ("other_images", other_images)):
        if len(array) < 2:
            raise ValueError(
                f"The Fréchet distance needs at least 2 images in each set. Received {len(array)} "
                f"{name}."
            )
    statistics = [
        feature_statistics(image_features(model, array, layer_name, batch_size))
        for array in (images, other_images)
    ]
    return {
        "frechet_distance": frechet_distance(*statistics[0], *statistics[1]),
        "features": f"{label}/{layer_name}",
        "images": len(images),
        "other_images": len(other_images),
    }
