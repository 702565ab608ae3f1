"""The kit's one configuration mechanism: a dataclass per entry point, with command-line overrides.

Each entry point (the coursework main job, a tutorial, a benchmark) declares its settings as a
dataclass. Every field becomes a command-line option, with its type, default and help text taken
from the field itself, so the settings are written down exactly once::

    @dataclasses.dataclass
    class MyConfig:
        epochs: int = field(10, "passes over the training set")
        mode: str = field("2d", "2d slices or 3d patches", choices=("2d", "3d"))
        patch_size: tuple[int, ...] = field((32, 64, 64), "3D patch (D, H, W) in voxels")

    cfg = parse_args(MyConfig)          # python script.py --epochs 3 --mode 3d --config my.yaml
    save_config(cfg, "results/run/config.yaml")
    same = load_config(MyConfig, "results/run/config.yaml")

Precedence, lowest first: the dataclass defaults, then ``--config FILE`` (YAML or JSON), then
the options given on the command line. Unknown keys in a config file are an error (a typo
must not silently fall back to a default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from data_utils.io import atomic_write

T = TypeVar("T")

_SCALARS = (int, float, str, bool)


class ConfigError(ValueError):
    """A config file or value that does not match the dataclass (names the file/field)."""


def field(default: Any, help: str, *, choices: Sequence[Any] | None = None,  # noqa: A002
          registry: str | None = None, minimum: float | None = None, maximum: float | None = None) -> Any:
    """A dataclass field with a help text (and optional allowed values or bounds) for the command line.

    Args:
        default: default value; lists/dicts are copied per instance.
        help: one line shown by ``--help``.
        choices: allowed values, checked on the command line and when loading a file.
        registry: instead of ``choices``, a category of ``data_utils.registry.REGISTRY``
            (``"model"``, ``"loss"``, ``"augmentation"``, ``"optimizer"``): the allowed values are
            its registered names, looked up when first needed (so defining the config stays cheap).
        minimum, maximum: inclusive bounds of a number (of every element of a list/tuple field),
            checked where the value is parsed, so ``--steps-per-epoch -5`` stops with one line
            naming the setting instead of failing later inside training.

    Returns:
        A ``dataclasses.field`` carrying the metadata.
    """
    if choices is not None and registry is not None:
        raise ValueError("give a field `choices` or a `registry` category, not both")
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "registry": registry,
                "minimum": minimum, "maximum": maximum}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ----------------------------------------------------------------------------- type handling
def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (works with ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _element_type(tp: Any) -> Any | None:
    """Element type of ``list[X]`` / ``tuple[X, ...]``; None for scalars."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return args[0] if args else str
    return None


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (from YAML/JSON or a string) to the field type ``tp``; ConfigError if not."""
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: null given, but a {_type_name(inner)} is required")
    element = _element_type(inner)
    if element is not None:
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list of {_type_name(element)}, got {value!r}")
        items = [_coerce(f"{name}[{i}]", element, v) for i, v in enumerate(value)]
        return tuple(items) if typing.get_origin(inner) is tuple else items
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if inner is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if inner is float:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if inner is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return str(value)
    if typing.get_origin(inner) is dict or inner is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    raise ConfigError(f"{name}: unsupported field type {tp!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def field_choices(f: dataclasses.Field) -> tuple[Any, ...] | None:
    """The allowed values of a config field: its ``choices``, or its registry category's names."""
    if f.metadata.get("registry"):
        from data_utils.registry import choices

        return choices(f.metadata["registry"])
    return f.metadata.get("choices")


def _check_choices(f: dataclasses.Field, value: Any, where: str) -> None:
    """Refuse a value outside the field's choices (or registry names) or ``minimum`` / ``maximum``."""
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    choices = field_choices(f)
    low, high = f.metadata.get("minimum"), f.metadata.get("maximum")
    for v in values:
        if choices is not None and v not in choices:
            raise ConfigError(
                f"{where}{f.name}: {v!r} is not one of {', '.join(map(str, choices))}"
            )
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if v != v or (low is not None and v < low) or (high is not None and v > high):
                bounds = " and ".join(b for b in (f">= {low}" if low is not None else "",
                                                  f"<= {high}" if high is not None else "") if b)
                raise ConfigError(f"{where}{f.name}: must be {bounds or 'a number'}, got {v!r}")


# ----------------------------------------------------------------------------- dict <-> dataclass
def from_dict(cls: type[T], values: dict[str, Any], *, source: str = "", base: T | None = None) -> T:
    """Build a ``cls`` instance from a plain dict, checking names, types and choices.

    Args:
        cls: the config dataclass.
        values: field name -> value (values may be strings, as typed on a command line).
        source: file name used in error messages.
        base: instance whose values are used for fields missing from ``values``
            (default: the dataclass defaults).

    Returns:
        A new ``cls`` instance.

    Raises:
        ConfigError: unknown field, wrong type, or a value outside the field's choices.
    """
    where = f"{source}: " if source else ""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}expected a mapping of settings, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}unknown setting(s) {', '.join(unknown)}; valid names are: {', '.join(fields)}"
        )
    hints = _field_types(cls)
    kwargs = dataclasses.asdict(base) if base is not None else {}
    for name, value in values.items():
        try:
            kwargs[name] = _coerce(name, hints[name], value)
        except ConfigError as err:
            raise ConfigError(f"{where}{err}") from None
        _check_choices(fields[name], kwargs[name], where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}{err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as a plain dict of YAML/JSON-friendly values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


# ----------------------------------------------------------------------------- files
def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} ({first})") from None
    return {} if data is None else data


def load_config(cls: type[T], path: str | os.PathLike, *, section: str | None = None) -> T:
    """Read a config dataclass from a YAML (``.yaml``/``.yml``) or JSON (``.json``) file.

    Fields missing from the file keep their defaults. A file written by :func:`save_config`
    with ``extra`` sections can be read back: pass ``section="config"`` or leave it None and the
    ``config`` section is used automatically when the file has one.

    Args:
        cls: the config dataclass.
        path: the file.
        section: top-level key holding the settings (optional).

    Returns:
        A ``cls`` instance.

    Raises:
        ConfigError: missing or unreadable file, unknown key, wrong type.
    """
    path = Path(path)
    data = _read_mapping(path)
    if section is None and isinstance(data, dict) and isinstance(data.get("config"), dict):
        section = "config"
    if section is not None:
        if not isinstance(data, dict) or section not in data:
            raise ConfigError(f"{path}: has no '{section}' section")
        data = data[section]
    return from_dict(cls, data, source=str(path))


def save_config(cfg: Any, path: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write a config dataclass to YAML or JSON (chosen by the suffix), atomically.

    Args:
        cfg: a dataclass instance.
        path: destination (``.yaml``, ``.yml`` or ``.json``).
        extra: optional further top-level sections (e.g. package versions); when given, the
            settings go under a ``config`` key so :func:`load_config` can still read them.

    Returns:
        The path written.
    """
    path = Path(path)
    data: dict[str, Any] = to_dict(cfg)
    if extra:
        data = {"config": data, **extra}
    if path.suffix.lower() == ".json":
        text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    elif path.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    else:
        raise ConfigError(f"{path}: config files must end in .yaml, .yml or .json")
    # Write next to the destination then rename, so a crash never leaves half a config file.
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ----------------------------------------------------------------------------- command line
def _option_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choices_metavar(choices) -> str:
    """``{a,b,c}``: how the help shows an option's allowed values."""
    return "{" + ",".join(map(str, choices)) + "}"


class _ChoicesShownLater:
    """A field's ``{a,b,c}`` metavar, computed by :func:`field_choices` only when the help is shown
    (a registry category's names load TensorFlow)."""

    def __init__(self, f: dataclasses.Field):
        self.field = f

    def __str__(self) -> str:
        return _choices_metavar(field_choices(self.field))


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one command-line option per dataclass field (plus ``--config FILE``) to ``parser``.

    Options are named after the fields with hyphens (``batch_size`` -> ``--batch-size``).
    Booleans get ``--flag`` / ``--no-flag``; list and tuple fields take several values
    (``--patch-size 32 64 64``). Defaults are not filled in by argparse: :func:`parse_args`
    layers them (defaults, then the config file, then the command line).

    Args:
        parser: the parser to extend.
        cls: the config dataclass.
    """
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML or JSON file of settings (command-line options override it)",
    )
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        shown = list(default) if isinstance(default, tuple) else default
        help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            parser.add_argument(_option_name(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        element = _element_type(tp)
        if element is not None:
            kwargs["nargs"] = "+"
            kwargs["metavar"] = _type_name(element).upper()
        else:
            kwargs["metavar"] = _type_name(tp).upper()
        if f.metadata.get("choices") is not None:
            kwargs["metavar"] = _choices_metavar(f.metadata["choices"])
        action = parser.add_argument(_option_name(f.name), **kwargs)
        if f.metadata.get("registry"):
            # Set after add_argument, which formats the metavar once to check it.
            action.metavar = _ChoicesShownLater(f)


def config_from_namespace(cls: type[T], namespace: argparse.Namespace, *,
                          presets: Sequence[tuple[str, dict[str, Any]]] = ()) -> T:
    """Resolve a config from parsed arguments: defaults, ``--config`` file, presets, then options.

    Args:
        cls: the config dataclass.
        namespace: result of ``parser.parse_args`` on a parser extended by :func:`add_arguments`.
        presets: ``(name, values)`` layers applied after the file and before the typed options,
            e.g. ``[("--quick", QUICK)]`` when the user asked for a smoke test (``name`` is used in
            error messages).

    Returns:
        A ``cls`` instance.

    Raises:
        ConfigError: a bad config file or option value (the message names it).
    """
    base = cls()
    config_file = getattr(namespace, "config", None)
    if config_file:
        base = load_config(cls, config_file)
    for name, values in presets:
        base = from_dict(cls, values, source=name, base=base)
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(namespace).items() if k in names}
    return from_dict(cls, overrides, source="command line", base=base)


def parse_args(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
    parser: argparse.ArgumentParser | None = None,
    presets: dict | None = None,
) -> T:
    """Parse the command line into a ``cls`` instance (see :func:`add_arguments` for the options).

    A bad value exits with argparse's usual one-line error and status 2.

    Args:
        cls: the config dataclass.
        argv: arguments (default: ``sys.argv[1:]``).
        description: text for ``--help``.
        parser: an existing parser to extend.
        presets: ``{flag: {field: value}}``: each becomes a ``--flag`` option that applies its values
            (e.g. ``{"quick": QUICK}`` for ``--quick``); see :func:`config_from_namespace`.

    Returns:
        A ``cls`` instance.
    """
    if parser is None:
        parser = argparse.ArgumentParser(description=description)
    for flag in presets or {}:
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, action="store_true",
                            help=f"apply the {flag} preset: {', '.join(f'{k}={v}' for k, v in presets[flag].items())}")
    add_arguments(parser, cls)
    namespace = parser.parse_args(argv)
    try:
        layers = [(f"--{flag.replace('_', '-')}", values) for flag, values in (presets or {}).items()
                  if getattr(namespace, flag, False)]
        return config_from_namespace(cls, namespace, presets=layers)
    except ConfigError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits
