"""The one registry of the kit: names -> builders for models, losses, augmentations and optimisers.

Every buildable thing the kit offers by name is registered here, in one of four categories, so a
config file or a command line can choose it by name and every tool lists the same choices::

    from data_utils.registry import REGISTRY
    REGISTRY.names("loss")                                    # ['cross_entropy', 'dice', 'dice_ce', ...]
    loss = REGISTRY.build_from_config("loss", {"name": "dice_ce", "batch": True})
    model = REGISTRY.build("model", "unet", input_shape=(64, 64, 1), num_classes=4)

Registered names are lower-case ``snake_case`` (``"attention_unet"``, ``"dice_ce"``); a lookup also
accepts hyphens (``"attention-unet"``), so names typed on a command line in either style work.

A category is filled when the package that defines its entries is imported; a lookup imports that
package first (``PROVIDERS``), so ``REGISTRY.names("model")`` works without importing ``models``
yourself. This module imports nothing heavy, which is why it sits at the bottom of the layers
(``data_utils``), below ``models`` and ``training``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

# The package whose import registers each category's entries.
PROVIDERS = {
    "model": "models",
    "loss": "training.losses",
    "augmentation": "data_utils.augment",
    "optimizer": "training.optim",
}

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def canonical_name(name: str) -> str:
    """The registered spelling of ``name``: stripped, lower case, hyphens as underscores."""
    if not isinstance(name, str):
        raise TypeError(f"a registry name must be a string, got {name!r}")
    return name.strip().lower().replace("-", "_")


class Registry:
    """Maps ``(category, name)`` to a builder: a class or function called with keyword arguments.

    Args:
        providers: category -> module whose import registers that category (imported on first
            lookup). The categories of a registry are the keys of ``providers``.
    """

    def __init__(self, providers: Mapping[str, str]):
        self.providers = dict(providers)
        self._entries: dict[str, dict[str, Any]] = {category: {} for category in self.providers}

    def _category(self, category: str) -> dict[str, Any]:
        if category not in self._entries:
            raise KeyError(f"unknown registry category {category!r}; categories are {sorted(self._entries)}")
        return self._entries[category]

    def register(self, category: str, name: str, builder: Any = None):
        """Register ``builder`` under ``name`` in ``category``; without ``builder``, a decorator.

        Args:
            category: one of :meth:`categories`.
            name: lower-case ``snake_case`` name, unique within the category.
            builder: a callable ``builder(**kwargs)`` (a class, a function, or a callable spec).

        Returns:
            ``builder`` (or the decorator, which returns what it decorates unchanged).

        Raises:
            ValueError: a name that is taken or not ``snake_case``.
        """
        if builder is None:
            return lambda obj: self.register(category, name, obj)
        entries = self._category(category)
        if not _NAME.match(name):
            raise ValueError(f"registry names are lower-case snake_case (e.g. 'dice_ce'), got {name!r}")
        if name in entries:
            raise ValueError(f"{category} name {name!r} is already registered by {entries[name]!r}")
        if not callable(builder):
            raise TypeError(f"{category} {name!r}: the builder must be callable, got {builder!r}")
        entries[name] = builder
        return builder

    def unregister(self, category: str, name: str) -> None:
        """Remove one entry (for tests that register temporary builders)."""
        del self._category(category)[canonical_name(name)]

    def _load(self, category: str) -> dict[str, Any]:
        entries = self._category(category)
        importlib.import_module(self.providers[category])
        return entries

    def categories(self) -> list[str]:
        """The category names, sorted."""
        return sorted(self._entries)

    def names(self, category: str) -> list[str]:
        """Sorted names registered in ``category``."""
        return sorted(self._load(category))

    def get(self, category: str, name: str) -> Any:
        """The builder registered under ``name`` (hyphens accepted for underscores).

        Raises:
            KeyError: an unknown name; the message lists the registered ones.
        """
        entries = self._load(category)
        key = canonical_name(name)
        if key not in entries:
            raise KeyError(f"unknown {category} {name!r}; registered {category}s are: {', '.join(sorted(entries))}")
        return entries[key]

    def build(self, category: str, name: str, **kwargs: Any) -> Any:
        """Call the builder registered under ``name`` with ``kwargs``."""
        return self.get(category, name)(**kwargs)

    def build_from_config(self, category: str, config: Mapping[str, Any] | str) -> Any:
        """Build from ``{"name": ..., **kwargs}`` (DeepReg's form), or from a bare name.

        Raises:
            ValueError: a config without ``"name"``.
        """
        if isinstance(config, str):
            return self.build(category, config)
        if "name" not in config:
            raise ValueError(f"a {category} config needs a 'name' key, got keys {sorted(config)}")
        kwargs = {k: v for k, v in config.items() if k != "name"}
        return self.build(category, config["name"], **kwargs)


REGISTRY = Registry(PROVIDERS)


def choices(category: str) -> tuple[str, ...]:
    """The registered names of ``category`` as a tuple, for command-line ``choices``."""
    return tuple(REGISTRY.names(category))


def register(category: str, name: str, builder: Callable | None = None):
    """``REGISTRY.register``: register a builder in the kit's one registry."""
    return REGISTRY.register(category, name, builder)
