"""Recipe: a small convolutional MNIST digit classifier, the judge of class-conditional samples.

It answers one question for the `pixelcnn_vqvae_mnist` model card: when the
prior is asked for a 3, does the decoded sample look like a 3 to a classifier
trained on real digits? It is a plain `keras.Sequential` (two 3x3 convolution
blocks, dropout, a dense softmax), fed images as floats in [0, 1] of shape
(N, 28, 28, 1), trained on the MNIST training split minus its last 5000 images
(held out for validation) and measured on the 10000 test images. Writes
`--out/metrics.json` and `--out/preset/` (what zoo/mnist_classifier/ ships),
plus the files of `vqkeras.training.fit_resumable`.

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/mnist_classifier/recipe.py \\
        --data path/to/mnist.npz --out runs/mnist_classifier --epochs 4
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import argparse
import json
import os

import keras
import numpy as np

import vqkeras
from vqkeras.file_io import write_json_atomic
from vqkeras.training import fit_resumable, load_npz_splits

IMAGE_SHAPE = (28, 28, 1)
VALIDATION_SIZE = 5000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MNIST .npz (keras.datasets layout)")
    parser.add_argument("--out", required=True, help="output directory (created if needed)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer")
    return args


def build_model():
    model = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mnist_classifier",
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    data = load_npz_splits(args.data, IMAGE_SHAPE, VALIDATION_SIZE)
    scaled = {name: data[name].astype("float32") / 255.0 for name in ("x_train", "x_val", "x_test")}
    model = build_model()
    _, timer = fit_resumable(
        model,
        scaled["x_train"],
        args.out,
        y=data["y_train"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(scaled["x_val"], data["y_val"]),
    )
    test = model.evaluate(scaled["x_test"], data["y_test"], verbose=0, return_dict=True)
    metrics = {
        "backend": keras.config.backend(),
        "vqkeras_version": vqkeras.__version__,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_images": len(scaled["x_train"]),
        **timer.summary(),
        "test": {"images": len(scaled["x_test"]), "accuracy": float(test["accuracy"])},
    }
    write_json_atomic(os.path.join(args.out, "metrics.json"), metrics, overwrite=True)
    sample_images, sample_labels = vqkeras.samples.load("mnist")
    sample_accuracy = float(
        np.mean(np.argmax(model.predict(sample_images / 255.0, verbose=0), -1) == sample_labels)
    )
    vqkeras.presets.save_to_preset(
        model,
        os.path.join(args.out, "preset"),
        metadata={
            "input": "float32 images in [0, 1], shape (N, 28, 28, 1); output: 10 class "
            "probabilities",
            "dataset": "MNIST (keras.datasets layout), train split minus its last 5000 images",
            "evaluation": "MNIST test split, all 10000 images",
            "recipe": "zoo/mnist_classifier/recipe.py",
            # The test suite checks the shipped sample is still classified this well.
            "sample_check": {
                "sample": "mnist",
                "accuracy": sample_accuracy,
                "accuracy_floor": sample_accuracy - 0.01,
            },
            "training": {key: metrics[key] for key in ("backend", "epochs", "batch_size", "seed")},
            "metrics": metrics["test"],
        },
        overwrite=True,
    )
    print(json.dumps(metrics, indent=2, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
