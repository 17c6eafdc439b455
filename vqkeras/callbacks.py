import math

import keras


class StopOnNaN(keras.callbacks.Callback):
    """Stops training with a clear error as soon as a logged value is NaN or inf.

    The models of vqkeras add it to every `fit`, so a diverging run fails at
    once, naming the batch and the terms that blew up, instead of training on
    garbage. (`keras.callbacks.TerminateOnNaN` only looks at the total loss.)
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = {k: v for k, v in (logs or {}).items() if not math.isfinite(float(v))}
        if bad:
            values = ", ".join(f"{k}={float(v)}" for k, v in bad.items())
            raise FloatingPointError(
                f"Training stopped: non-finite values at epoch {getattr(self, '_epoch', 0) + 1}, "
                f"batch {batch}: {values}. Expected finite losses. Check the input "
                "images for NaN or inf values, and try a lower learning rate."
            )
