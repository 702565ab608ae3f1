"""Model names -> builder functions, in the kit's one registry (``data_utils.registry.REGISTRY``).

Every builder in `models/` registers itself with :func:`register` (category ``"model"``), so a
model can be chosen by name from a config file or the command line::

    import models
    model = models.get("unet", input_shape=(64, 64, 1), num_classes=4)
    print(models.list_models())
    print(models.summary_table())

The registry stores, beside each builder, the facts the README's model table shows: the
family, the lecture topic, the spatial ranks it supports and a small example configuration
(used by tests and by :func:`summary_table`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras

from data_utils.registry import REGISTRY


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model.

    Attributes:
        name: registry key, lower-case snake_case (e.g. ``"resnet50"``, ``"attention_unet"``).
        builder: function ``builder(**kwargs) -> keras.Model``.
        family: architecture family shown in tables (e.g. ``"ResNet"``).
        topic: lecture topic the model belongs to (e.g. ``"CNN architectures"``).
        ranks: spatial ranks the builder accepts, e.g. ``(2, 3)`` for 2D and 3D images, ``(1,)`` for
            sequences or point sets, ``(0,)`` for flat feature vectors.
        defaults: keyword arguments for the configuration shown in :func:`summary_table`
            (the canonical/published configuration where one exists).
        example: keyword arguments that, merged over ``defaults``, give a small configuration that
            builds and runs in about a second on a CPU (used by the backend tests).
    """

    name: str
    builder: Callable[..., keras.Model]
    family: str
    topic: str
    ranks: tuple[int, ...]
    defaults: dict[str, Any]
    example: dict[str, Any] = dataclasses.field(default_factory=dict)

    def small_kwargs(self) -> dict[str, Any]:
        """``defaults`` updated with ``example``: the small configuration to test with."""
        return {**self.defaults, **self.example}

    def __call__(self, **kwargs: Any) -> keras.Model:
        """Build the model: the builder with ``defaults`` updated by ``kwargs``."""
        return self.builder(**{**self.defaults, **kwargs})


def register(
    name: str,
    *,
    family: str,
    topic: str,
    ranks: tuple[int, ...] = (2, 3),
    defaults: dict[str, Any] | None = None,
    example: dict[str, Any] | None = None,
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Decorator that registers a model builder under ``name``.

    Args:
        name: registry key; must be unique.
        family, topic, ranks, defaults, example: see :class:`ModelSpec`.

    Returns:
        The decorator, which returns the builder unchanged.
    """

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        spec = ModelSpec(name, builder, family, topic, tuple(ranks), dict(defaults or {}), dict(example or {}))
        REGISTRY.register("model", name, spec)
        return builder

    return decorator


def preset(
    name: str,
    base: Callable[..., keras.Model],
    doc: str,
    *,
    fixed: dict[str, Any],
    settable: dict[str, Any] | None = None,
    **spec: Any,
) -> Callable[..., keras.Model]:
    """Register a named configuration of ``base`` (e.g. ResNet-18 of :func:`models.resnet.resnet`).

    The preset is ``preset(input_shape, num_classes, **kwargs)``: ``base`` with the ``fixed``
    arguments (which define the preset; passing one again is an error), ``settable`` defaults the
    caller may override, model name ``name`` unless given, and any other ``base`` argument.

    Args:
        name: registry key, function and default model name. base: the builder it configures.
        doc: the preset's docstring (what it is and the published count it matches).
        fixed: arguments that make the preset, e.g. ``blocks=(2, 2, 2, 2)``.
        settable: defaults that differ from ``base``'s, e.g. ``growth_rate=32``.
        **spec: ``family``, ``topic``, ``ranks``, ``defaults``, ``example`` as for :func:`register`.

    Returns:
        The preset builder, registered under ``name``.
    """

    def builder(input_shape, num_classes: int, **kwargs: Any) -> keras.Model:
        clash = sorted(set(fixed) & set(kwargs))
        if clash:
            raise TypeError(f"{name}: {clash} define the preset and cannot be passed; use {base.__name__}() instead")
        kwargs = {"name": name, **(settable or {}), **kwargs}
        return base(input_shape, num_classes, **fixed, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__module__ = base.__module__
    builder.__doc__ = doc
    return register(name, **spec)(builder)


def get_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` registered under ``name`` (clear error if unknown)."""
    return REGISTRY.get("model", name)


def get(name: str, **kwargs: Any) -> keras.Model:
    """Build the model registered under ``name``.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: keyword arguments for the builder; they override the registered defaults.

    Returns:
        A new, freshly initialised ``keras.Model``.
    """
    return REGISTRY.build("model", name, **kwargs)


def list_models(family: str | None = None) -> list[str]:
    """Sorted names of all registered models, optionally only those of one ``family``."""
    return [n for n in REGISTRY.names("model") if family is None or get_spec(n).family == family]


def summary_table(names: list[str] | None = None) -> str:
    """A Markdown table: name, family, parameters, input ranks and lecture topic.

    Each model is built once with its registered defaults to count its parameters, so this
    takes a little while for the large presets.

    Args:
        names: models to include (default: all registered models).

    Returns:
        The table as a Markdown string.
    """
    rows = ["| name | family | parameters | input rank | lecture topic |", "| --- | --- | ---: | --- | --- |"]
    for name in names or list_models():
        spec = get_spec(name)
        model = get(name)
        params = model.count_params()
        ranks = "/".join(_rank_label(r) for r in spec.ranks)
        rows.append(f"| `{name}` | {spec.family} | {params:,} | {ranks} | {spec.topic} |")
        del model
        keras.backend.clear_session()
    return "\n".join(rows)


def _rank_label(rank: int) -> str:
    return {0: "vector", 1: "sequence/points"}.get(rank, f"{rank}D")
