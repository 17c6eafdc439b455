"""Recipe: a small convolutional MNIST digit classifier, the judge of class-conditional samples.

It answers one question for the `pixelcnn_vqvae_mnist` model card: when the
prior is asked for a 3, does the decoded sample look like a 3 to a classifier
trained on real digits? It is a plain `keras.Sequential` (two 3x3 convolution
blocks, dropout, a dense softmax), fed images as floats in [0, 1] of shape
(N, 28, 28, 1), trained on the MNIST training split minus its last 5000 images
(held out for validation) and measured on the 10000 test images. Writes
`--out/metrics.json` and `--out/preset/` (what zoo/mnist_classifier/ ships),
plus the files of `vqkeras.training.fit_resumable`, through
`vqkeras.training.train_and_evaluate`: rerun the same command after an
interruption to resume.

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

import keras

import vqkeras
from vqkeras.training import classifier_sample_check, load_npz_splits, train_and_evaluate
from vqkeras.validation import to_unit_range

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
    """The classifier, built and uncompiled."""
    return keras.Sequential(
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


def main(argv=None):
    """Trains, measures and saves the classifier (see the module docstring);
    returns the `vqkeras.training.TrainingRun`."""
    args = parse_args(argv)
    data = load_npz_splits(args.data, IMAGE_SHAPE, VALIDATION_SIZE)
    scaled = {name: to_unit_range(data[name]) for name in ("x_train", "x_val", "x_test")}

    def evaluate(model):
        test = model.evaluate(scaled["x_test"], data["y_test"], verbose=0, return_dict=True)
        return {"images": len(scaled["x_test"]), "accuracy": float(test["accuracy"])}

    def report(run):
        metrics = {
            "backend": keras.config.backend(),
            "vqkeras_version": vqkeras.__version__,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "train_images": len(scaled["x_train"]),
            **run.timer.summary(),
            "test": run.evaluation,
        }
        metadata = {
            "input": "float32 images in [0, 1], shape (N, 28, 28, 1); output: 10 class "
            "probabilities",
            "dataset": "MNIST (keras.datasets layout), train split minus its last 5000 images",
            "evaluation": "MNIST test split, all 10000 images",
            "recipe": "zoo/mnist_classifier/recipe.py",
            # The test suite checks the shipped sample is still classified this well.
            "sample_check": classifier_sample_check(run.model, "mnist"),
            "training": {key: metrics[key] for key in ("backend", "epochs", "batch_size", "seed")},
            "metrics": metrics["test"],
        }
        return metrics, metadata

    run = train_and_evaluate(
        build_model,
        scaled["x_train"],
        args.out,
        y=data["y_train"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        evaluate=evaluate,
        report=report,
        # Plain Adam: a constant learning rate of 1e-3, as the shipped preset was trained.
        learning_rate=1e-3,
        final_fraction=1.0,
        compile_kwargs={"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        validation_data=(scaled["x_val"], data["y_val"]),
    )
    print(json.dumps(run.metrics, indent=2, sort_keys=True), flush=True)
    return run


if __name__ == "__main__":
    main()
