"""Recipe: a small convolutional CIFAR-10 classifier, whose features measure images.

The zoo's feature network for 32x32 color images, trained here (ImageNet
networks cannot be downloaded everywhere): the Fréchet distance of
`vqkeras evaluate --frechet-features cifar10_classifier` is measured in its
penultimate layer, the Dense layer named "features"
(`vqkeras.evaluation.frechet_distance_of_images`), and
`PerceptualLoss.from_classifier("cifar10_classifier")` compares its
convolutions' outputs. Its accuracy says how much its features know of the
images: report it beside any distance measured in them.

A `keras.Sequential`: three blocks of two 3x3 convolutions with batch
normalization and ReLU (32, 64, 128 channels; max pooling after the first
two), global average pooling, "features" (256 units, ReLU), dropout and a
10-way softmax; images as floats in [0, 1] of shape (N, 32, 32, 3). Trained
with random flips and shifts (`vqkeras.augmentation`) and Adam with a cosine
decay on the CIFAR-10 training split minus its last 5000 images (held out for
validation), measured on the 10000 test images. Writes `--out/metrics.json`
and `--out/preset/` (what zoo/cifar10_classifier/ would ship), plus the files
of `vqkeras.training.fit_resumable`, through
`vqkeras.training.train_and_evaluate`: rerun the same command after an
interruption to resume; `--init-from` starts from a preset's weights (e.g.
the shipped `cifar10_classifier`) rather than a fresh initialization.

Usage (any Keras backend):

    KERAS_BACKEND=tensorflow python zoo/cifar10_classifier/recipe.py \\
        --data path/to/cifar10.npz --out runs/cifar10_classifier --epochs 30

`--data` is an `.npz` file in the layout of `keras.datasets.cifar10.load_data()`.
"""

import pathlib
import sys

# Run from a clone without installing: the repository root holds the vqkeras package.
if (pathlib.Path(__file__).resolve().parents[2] / "vqkeras" / "__init__.py").is_file():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import json

import keras

import vqkeras
from vqkeras.augmentation import augmentation_layers
from vqkeras.training import classifier_sample_check, load_npz_splits, train_and_evaluate
from vqkeras.validation import to_unit_range
from vqkeras.zoo.recipe_options import parse_training_args, training_parser

IMAGE_SHAPE = (32, 32, 3)
VALIDATION_SIZE = 5000
NUM_CLASSES = 10
BLOCK_CHANNELS = (32, 64, 128)
FEATURES = 256
FEATURE_LAYER = "features"


def build_model():
    """The classifier, uncompiled; its layers are named for the features
    they give (`block{b}_conv{c}`, "features")."""
    model_layers = [keras.Input(IMAGE_SHAPE)]
    for block, channels in enumerate(BLOCK_CHANNELS, start=1):
        for conv in (1, 2):
            model_layers += [
                # No bias: the batch normalization after it has its own offset.
                keras.layers.Conv2D(
                    channels, 3, padding="same", use_bias=False, name=f"block{block}_conv{conv}"
                ),
                keras.layers.BatchNormalization(name=f"block{block}_norm{conv}"),
                keras.layers.ReLU(name=f"block{block}_relu{conv}"),
            ]
        if block < len(BLOCK_CHANNELS):
            model_layers.append(keras.layers.MaxPooling2D(name=f"block{block}_pool"))
    model_layers += [
        keras.layers.GlobalAveragePooling2D(name="pool"),
        keras.layers.Dense(FEATURES, activation="relu", name=FEATURE_LAYER),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(NUM_CLASSES, activation="softmax", name="scores"),
    ]
    return keras.Sequential(model_layers, name="cifar10_classifier")


def main(argv=None):
    """Trains, measures and saves the classifier (see the module docstring);
    returns the `vqkeras.training.TrainingRun`."""
    # The zoo's shared options: data, output, epochs, ..., --limit-train.
    args = parse_training_args(training_parser(__doc__.split("\n\n")[0], 1e-3), argv)
    data = load_npz_splits(args.data, IMAGE_SHAPE, VALIDATION_SIZE, args.limit_train)
    scaled = {name: to_unit_range(data[name]) for name in ("x_val", "x_test")}

    def evaluate(model):
        test = model.evaluate(scaled["x_test"], data["y_test"], verbose=0, return_dict=True)
        return {"images": len(scaled["x_test"]), "accuracy": float(test["accuracy"])}

    def report(run):
        metrics = {
            "backend": keras.config.backend(),
            "vqkeras_version": vqkeras.__version__,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "schedule_epochs": args.schedule_epochs,
            "train_images": len(data["x_train"]),
            "init_from": args.init_from,
            **run.timer.summary(),
            "test": run.evaluation,
        }
        metadata = {
            "input": "float32 images in [0, 1], shape (N, 32, 32, 3); output: 10 class "
            "probabilities",
            "feature_layer": FEATURE_LAYER,
            "dataset": f"CIFAR-10 (keras.datasets layout), the first {len(data['x_train'])} "
            "images of the train split without its last 5000; random flips and shifts",
            "evaluation": "CIFAR-10 test split, all 10000 images",
            "recipe": "zoo/cifar10_classifier/recipe.py",
            # The test suite checks the shipped sample is still classified this well.
            "sample_check": classifier_sample_check(run.model, "cifar10"),
            "training": {
                **{key: metrics[key] for key in ("backend", "epochs", "batch_size", "seed")},
                **({"init_from": args.init_from} if args.init_from else {}),
            },
            "metrics": metrics["test"],
        }
        return metrics, metadata

    run = train_and_evaluate(
        build_model,
        data["x_train"],  # uint8: the augmentation pipeline scales it to [0, 1]
        args.out,
        y=data["y_train"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        evaluate=evaluate,
        report=report,
        init_from=args.init_from,
        schedule_epochs=args.schedule_epochs,
        learning_rate=args.learning_rate,
        compile_kwargs={"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        validation_data=(scaled["x_val"], data["y_val"]),
        time_limit_minutes=args.time_limit_minutes,
        augmentation=augmentation_layers(["flip", "shift"], seed=args.seed),
    )
    print(json.dumps(run.metrics, indent=2, sort_keys=True), flush=True)
    return run


if __name__ == "__main__":
    main()
