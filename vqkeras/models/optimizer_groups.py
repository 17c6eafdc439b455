"""Optimizer groups: parts of a model trained on their own loss terms by their
own optimizer (a generator and its discriminator, say).

A model lists its groups in `optimizer_groups`; the default is one group of
every trainable variable and every loss term. `compile(optimizer=...)` gives
the first group's optimizer and `compile(<name>_optimizer=...)` each other
group's. With several groups, `model.optimizer` is a `GroupedOptimizer`: one
optimizer whose `variables` are all the groups' optimizer states, so that
Keras carries them through its JAX training loop, its checkpoints and
`BackupAndRestore` as it carries a single optimizer's.
"""

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class OptimizerGroup:
    """Variables trained on some loss terms by one optimizer.

    Attributes:
        name: the group's name; `compile(<name>_optimizer=...)` gives the
            optimizer of every group but the first (`compile(optimizer=...)`).
        loss_names: the loss terms whose (weighted) sum the group minimizes.
        layers: attribute names of the model's layers whose trainable
            variables the group trains; None for every trainable variable
            that no other group names (at most one group).
    """

    name: str
    loss_names: tuple
    layers: tuple | None = None


def group_variables(model, groups):
    """The trainable variables of each of `groups`, a list of lists."""
    claimed = {}
    for group in groups:
        if group.layers is None:
            continue
        for attribute in group.layers:
            for variable in getattr(model, attribute).trainable_variables:
                other = claimed.setdefault(id(variable), group.name)
                if other != group.name:
                    raise ValueError(
                        f"Variable {variable.path} is in the optimizer groups {other!r} and "
                        f"{group.name!r}: each variable may be trained by one optimizer only."
                    )
    by_group = []
    for group in groups:
        if group.layers is None:
            variables = [v for v in model.trainable_variables if id(v) not in claimed]
        else:
            variables = [v for v in model.trainable_variables if claimed.get(id(v)) == group.name]
        by_group.append(variables)
    return by_group


def check_groups(groups, loss_names):
    """Raises a clear error unless `groups` are well formed for `loss_names`."""
    names = [group.name for group in groups]
    if not groups or len(set(names)) != len(names):
        raise ValueError(f"Optimizer groups need distinct names. Received: {names}")
    if sum(group.layers is None for group in groups) > 1:
        raise ValueError(
            "At most one optimizer group may take the remaining variables (layers=None). "
            f"Received groups: {names}"
        )
    for group in groups:
        unknown = set(group.loss_names) - set(loss_names)
        if unknown:
            raise ValueError(
                f"Optimizer group {group.name!r} names loss terms {sorted(unknown)} that the "
                f"model does not compute. Its loss terms: {list(loss_names)}"
            )


@keras.saving.register_keras_serializable(package="vqkeras")
class GroupedOptimizer(keras.optimizers.Optimizer):
    """One optimizer per optimizer group, held as one Keras optimizer.

    Its `variables` are the inner optimizers' variables, group after group,
    so that every group's state is saved, restored and (on JAX) carried
    through the compiled training step. Its `iterations` and
    `learning_rate` are those of the first group's optimizer (what Keras
    callbacks read and set). The backend trainers apply each inner optimizer
    to its own group's gradients; `apply` on the whole is not defined.

    Attributes:
        group_optimizers: the dict from group name to optimizer.
        optimizers: the optimizers, in group order: a list, as Keras's
            callbacks expect of an optimizer that holds several (TensorBoard
            logs each one's learning rate).

    Args:
        optimizers: a dict from group name to optimizer, in group order.
    """

    def __init__(self, optimizers, name="grouped_optimizer", **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.group_optimizers = {
            group: keras.optimizers.get(optimizer) for group, optimizer in optimizers.items()
        }
        self._group_variables_fn = None

    @classmethod
    def for_groups(cls, groups, optimizer, group_optimizers, loss_scaling=False):
        """The optimizer of `compile(optimizer, <name>_optimizer=...)` for `groups`.

        Args:
            groups: the model's `OptimizerGroup`s.
            optimizer: the first group's optimizer (or a `GroupedOptimizer`
                from a saved compile config, whose optimizers are kept).
            group_optimizers: `{name: optimizer or None}` for the other
                groups; None gets a fresh copy of the first group's.
            loss_scaling: wrap each optimizer in a `LossScaleOptimizer`
                (mixed_float16): each group's loss gets its own scale.
        """
        if isinstance(optimizer, cls):
            optimizer, *rest = optimizer.optimizers
            group_optimizers = dict(zip(group_optimizers, rest))
        main = keras.optimizers.get(optimizer)
        optimizers = {groups[0].name: main}
        for name, group_optimizer in group_optimizers.items():
            optimizers[name] = (
                type(main).from_config(main.get_config())
                if group_optimizer is None
                else keras.optimizers.get(group_optimizer)
            )
        if loss_scaling:
            optimizers = {
                name: o
                if isinstance(o, keras.optimizers.LossScaleOptimizer)
                else keras.optimizers.LossScaleOptimizer(o)
                for name, o in optimizers.items()
            }
        return cls(optimizers)

    def find_group_variables_with(self, function):
        """Sets `function() -> [variables of each group]`, which `build`
        calls to give each group's optimizer its variables."""
        self._group_variables_fn = function

    def build(self, var_list):
        if self._group_variables_fn is None:
            raise ValueError(
                "A GroupedOptimizer is built by the model that compiled it, which tells it "
                "each group's variables."
            )
        for optimizer, variables in zip(self.optimizers, self._group_variables_fn()):
            if not optimizer.built:
                optimizer.build(variables)
        super().build(var_list)

    @property
    def optimizers(self):
        return list(self.group_optimizers.values())

    @property
    def variables(self):
        return [v for optimizer in self.optimizers for v in optimizer.variables]

    @property
    def main(self):
        return self.optimizers[0]

    @property
    def iterations(self):
        return self.main.iterations

    @property
    def learning_rate(self):
        return self.main.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        # The base class sets it to 0.0 while the inner optimizers do not exist yet.
        if "group_optimizers" in self.__dict__:
            self.main.learning_rate = learning_rate

    def apply(self, grads, trainable_variables=None):
        raise NotImplementedError(
            "A GroupedOptimizer applies each group's optimizer to that group's gradients "
            "(see vqkeras.models.trainers); it has no update of its own."
        )

    def get_config(self):
        return {
            "name": self.name,
            "optimizers": {
                group: keras.saving.serialize_keras_object(optimizer)
                for group, optimizer in self.group_optimizers.items()
            },
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizers"] = {
            group: keras.saving.deserialize_keras_object(optimizer, custom_objects=custom_objects)
            for group, optimizer in config["optimizers"].items()
        }
        return cls(**config)
