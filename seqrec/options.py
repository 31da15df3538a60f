"""Options declared once: a typed field with its default, a one-line help and its valid values.

An estimator (or :class:`seqrec.runs.RunConfig`) is an :class:`Options` subclass whose options are class
attributes::

    class SASRec(NeuralRecommender):
        dim: int = option(64, "hidden size (the paper's d)")
        loss: str = option("ce", "training loss", choices=LOSSES)

Every subclass becomes a keyword-only dataclass (``__init__`` only stores), so the declaration is the
signature; ``get_params`` / ``set_params`` / ``clone``, validation ("unknown option 'x'; valid ones are
...", values outside ``choices`` or a range), the CLI flags with their help lines and the config-file
schema are all derived from it. A subclass changes inherited defaults with ``DEFAULTS = {name: value}``
(its help, type and checks stay those of the declaration).

An option may also say how ``seqrec tune`` searches it (``search=`` :func:`choice` or :func:`span`, next to
its default); a subclass changes or removes (``None``) an inherited one with ``SEARCH = {name: spec}``.
:meth:`Options.search_space` collects them.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

from seqrec.errors import ConfigError, choose


def option(default, help: str, *, choices=None, check: Callable | None = None, group: str | None = None,
           search: "Search | None" = None):
    """A declared option: ``default``, a one-line ``help``, optional ``choices`` (a collection, a mapping
    whose keys are the valid values, or ``cls -> collection`` for choices a subclass sets) and ``check``
    (``value -> error text or None``, see :func:`between`).
    ``group`` names the help section it is listed under (default: the declaring class); ``search`` how
    ``seqrec tune`` searches it (:func:`choice`, :func:`span`; default: it is not searched)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "check": check,
                                                        "group": group, "search": search})


@dataclasses.dataclass(frozen=True)
class Search:
    """How ``seqrec tune`` searches one option: among ``choices``, or over [``low``, ``high``] (on a log scale
    if ``log``; in steps of ``step`` if given; integers for an int option). ``when`` ({option: values}):
    searched only in trials where those options take one of those values (otherwise the option keeps its
    default), e.g. the number of negatives only for sampled losses."""

    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    when: tuple = ()  # ((option, (values, ...)), ...): hashable, so a Search can be a declaration's default

    def __post_init__(self):
        if self.choices is None and (self.low is None or self.high is None or self.low > self.high):
            raise ConfigError(f"a search range needs low <= high, got [{self.low}, {self.high}]")
        if self.log and (self.low is None or self.low <= 0):
            raise ConfigError(f"a log-scale search range needs low > 0, got {self.low}")

    @property
    def conditions(self) -> dict:
        return {name: values for name, values in self.when}

    def describe(self) -> dict:
        """A JSON-able description (the form a space file takes, see :func:`search_from`)."""
        text = {"choices": list(self.choices)} if self.choices is not None else \
            {"low": self.low, "high": self.high, **({"log": True} if self.log else {}),
             **({"step": self.step} if self.step is not None else {})}
        return {**text, **({"when": {k: list(v) for k, v in self.when}} if self.when else {})}


def choice(*values, when: dict | None = None) -> Search:
    """Search an option among ``values`` (see :class:`Search`)."""
    if not values:
        raise ConfigError("a search choice needs at least one value")
    return Search(choices=tuple(values), when=_conditions(when))


def span(low: float, high: float, *, log: bool = False, step: float | None = None, when: dict | None = None) -> Search:
    """Search an option over [low, high] (see :class:`Search`)."""
    return Search(low=low, high=high, log=log, step=step, when=_conditions(when))


def search_from(name: str, spec) -> Search | None:
    """A space file's entry for option ``name``: ``null`` (not searched), a list (choices), or a table with
    ``choices`` or ``low``/``high`` (optionally ``log``, ``step``) and optionally ``when``."""
    if spec is None:
        return None
    if isinstance(spec, list):
        return choice(*spec)
    if not isinstance(spec, dict):
        raise ConfigError(f"search space: {name}: expected null, a list of values, or a table with 'choices' or "
                          f"'low' and 'high'; got {spec!r}")
    unknown = sorted(set(spec) - {"choices", "low", "high", "log", "step", "when"})
    if unknown:
        raise ConfigError(f"search space: {name}: unknown key(s) {unknown}; valid: choices, low, high, log, step, when")
    when = spec.get("when")
    if when is not None and not isinstance(when, dict):
        raise ConfigError(f"search space: {name}: 'when' must be a table {{option: [values]}}, got {when!r}")
    try:
        if "choices" in spec:
            if not isinstance(spec["choices"], list):
                raise ConfigError(f"search space: {name}: 'choices' must be a list, got {spec['choices']!r}")
            return choice(*spec["choices"], when=when)
        if "low" not in spec or "high" not in spec:
            raise ConfigError(f"search space: {name}: a range needs both 'low' and 'high'")
        return span(spec["low"], spec["high"], log=bool(spec.get("log", False)), step=spec.get("step"), when=when)
    except ConfigError as exc:
        raise ConfigError(f"search space: {name}: {str(exc).removeprefix('search space: ')}") from None


def _conditions(when: dict | None) -> tuple:
    return tuple((name, tuple(values if isinstance(values, (list, tuple)) else [values]))
                 for name, values in (when or {}).items())


def between(low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False, none_ok: bool = False) -> Callable:
    """A check: the value lies in the interval (``*_open`` excludes that end); ``None`` passes if ``none_ok``."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    text = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"

    def check(value):
        if value is None:
            return None if none_ok else f"must be a number in {text}, got None"
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        return f"must be in {text}, got {value}" if below or above else None

    return check


class Options:
    """Base of everything configured by declared options (see the module docstring)."""

    DEFAULTS: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__annotations__", {})
        # not a dataclass yet: fields() reads the bases' (mixins included, through the MRO)
        inherited = {}
        for base in reversed(cls.__mro__[1:]):
            if "__dataclass_fields__" in base.__dict__:
                inherited.update({f.name: f for f in dataclasses.fields(base)})
        annotations = dict(own)
        for name, value in cls.__dict__.get("DEFAULTS", {}).items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__}.DEFAULTS: no inherited option {name!r}")
            base = inherited[name]
            annotations[name] = base.type
            setattr(cls, name, dataclasses.field(default=value, metadata=base.metadata))
        cls.__annotations__ = annotations
        dataclasses.dataclass(cls, kw_only=True, eq=False)
        for name in cls.__dict__.get("SEARCH", {}):
            if name not in cls.__dataclass_fields__:
                raise TypeError(f"{cls.__name__}.SEARCH: no option {name!r}")

    # ---- the declared options ------------------------------------------------------------------
    @classmethod
    def option_fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def search_space(cls) -> dict[str, Search]:
        """How ``seqrec tune`` searches this class's options: each option's declared ``search``, changed by the
        ``SEARCH`` tables of the subclasses (the most derived wins; ``None`` removes one)."""
        space = {name: f.metadata.get("search") for name, f in cls.option_fields().items()}
        for klass in reversed(cls.__mro__):
            space.update(klass.__dict__.get("SEARCH", {}))
        return {name: spec for name, spec in space.items() if spec is not None}

    @classmethod
    def option_types(cls) -> dict[str, object]:
        hints = typing.get_type_hints(cls)
        return {name: hints[name] for name in cls.option_fields()}

    def get_params(self) -> dict:
        """Every option's current value (scikit-learn's contract: ``type(self)(**get_params())`` clones)."""
        return {name: getattr(self, name) for name in self.option_fields()}

    def set_params(self, **params) -> "Options":
        """Set options by name (unknown names fail, listing the valid ones); returns ``self``."""
        self.check_names(params)
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def clone(self) -> "Options":
        """A new, unfitted instance with the same options."""
        return type(self)(**self.get_params())

    @classmethod
    def check_names(cls, params) -> None:
        valid = list(cls.option_fields())
        unknown = [name for name in params if name not in valid]
        if unknown:
            what = getattr(cls, "name", "") or cls.__name__
            raise ConfigError(f"unknown option(s) {unknown} for {what}; valid ones are {valid}")

    @classmethod
    def choices(cls, name: str):
        """The valid values of option ``name`` (None: any value of its type)."""
        choices = cls.option_fields()[name].metadata.get("choices")
        return choices(cls) if callable(choices) else choices

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value of the wrong type, outside its choices or its range."""
        types = self.option_types()
        for name, f in self.option_fields().items():
            value, meta = getattr(self, name), f.metadata
            if not _matches(value, types[name]):
                raise ConfigError(f"option {name} must be {_type_name(types[name])}, got {value!r}")
            choices = self.choices(name)
            if choices is not None and value is not None:
                choose(name.replace("_", " "), value.split(":")[0] if name == "device" else value, choices)
            error = meta["check"](value) if meta.get("check") else None
            if error:
                raise ConfigError(f"option {name} {error}")


def _matches(value, kind) -> bool:
    options = _alternatives(kind)
    for t in options:
        if t is type(None) and value is None:
            return True
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t in (str, bool) and isinstance(value, t):
            return True
        if typing.get_origin(t) in (list, tuple) and isinstance(value, (list, tuple)):
            return True
    return False


def _type_name(kind) -> str:
    options = _alternatives(kind)
    return " or ".join("None" if t is type(None) else getattr(t, "__name__", str(t)) for t in options)


def _alternatives(kind) -> tuple:
    """The types a declared type admits: ``(int, NoneType)`` for ``int | None``, ``(kind,)`` otherwise."""
    return typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, type(int | None)) else (kind,)


def parse_value(text: str, kind):
    """A command-line string as a value of the declared type ``kind`` (``none`` for an optional one)."""
    options = _alternatives(kind)
    if type(None) in options and text.strip().lower() in {"none", "null"}:
        return None
    for t in options:
        if t is bool:
            value = text.strip().lower()
            if value in {"1", "true", "yes", "on"}:
                return True
            if value in {"0", "false", "no", "off"}:
                return False
        elif typing.get_origin(t) in (list, tuple):
            item = (typing.get_args(t) or (str,))[0]
            try:
                return [item(x) for x in text.split(",") if x.strip()]
            except ValueError:
                continue
        elif t is not type(None):
            try:
                return t(text)
            except ValueError:
                continue
    raise ValueError(f"invalid {_type_name(kind)} value {text!r}")
