"""Options dataclasses that declare their own command-line flags.

Each field of an options dataclass is made with :func:`flag` (its flag, parser type, choices and help
next to the field) or :func:`internal` (set by code, never from the command line: say why). The CLI
builds each verb's parser from those declarations (:func:`add_flags`) and fills the dataclass from
the parsed arguments (:func:`options_from`); :func:`undeclared` names a field that is neither, and
``tests/test_options.py`` fails on one. A range type (:class:`IntRange`, :class:`FloatRange`) both
parses a flag and checks a value given from Python (:func:`validate`, called by the dataclasses'
``__post_init__``): a range is written once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import EdgeSqueezeError

FLAG = "edge_squeeze.flag"


class IntRange:
    """A whole number in [low, high]: a parser type (``IntRange(1)("0")`` raises argparse's error)
    and a value check (:meth:`check`)."""

    def __init__(self, low: int, high: Optional[int] = None) -> None:
        self.low, self.high = low, high
        self.__name__ = "int"  # argparse names the type in some messages

    def allowed(self) -> str:
        return f"from {self.low} to {self.high}" if self.high is not None else f"at least {self.low}"

    def problem(self, value: Any) -> Optional[str]:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected a whole number, got {value!r}"
        if value < self.low or (self.high is not None and value > self.high):
            return f"must be {self.allowed()}, got {value}"
        return None

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value


class FloatRange:
    """A finite number between ``low`` and ``high`` (each end open or closed)."""

    def __init__(
        self, low: float, high: Optional[float] = None, low_open: bool = False, high_open: bool = False
    ) -> None:
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open
        self.__name__ = "float"

    def problem(self, value: Any) -> Optional[str]:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        too_low = value <= self.low if self.low_open else value < self.low
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if not math.isfinite(value) or too_low or too_high:
            left = "(" if self.low_open else "["
            right = ")" if self.high_open else "]"
            top = "inf" if self.high is None else format(self.high, "g")
            return f"must lie in {left}{self.low:g}, {top}{right}, got {value:g}"
        return None

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem.replace(f"got {value:g}", f"got {text}"))
        return value


class BatchSizes:
    """Comma-separated batch sizes, each in [1, high]."""

    def __init__(self, high: int = 1024) -> None:
        self.each = IntRange(1, high)
        self.__name__ = "batch sizes"

    def problem(self, value: Any) -> Optional[str]:
        if not value:
            return "give at least one batch size, e.g. 1,8,32"
        return next((p for p in map(self.each.problem, value) if p), None)

    def __call__(self, text: str) -> List[int]:
        values = [self.each(item.strip()) for item in text.split(",") if item.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one batch size, e.g. 1,8,32")
        return values


class ChoiceList:
    """Comma-separated names, each one of ``choices`` (``fp32,fp16``)."""

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)
        self.__name__ = "list"

    def problem(self, value: Any) -> Optional[str]:
        if isinstance(value, str) or not value:
            return f"give one or more of {', '.join(self.choices)}"
        wrong = [v for v in value if v not in self.choices]
        return f"each must be one of {', '.join(self.choices)}, not {wrong[0]!r}" if wrong else None

    def __call__(self, text: str) -> Tuple[str, ...]:
        values = tuple(item.strip() for item in text.split(",") if item.strip())
        problem = self.problem(values)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return values


class PrefixBits:
    """``PREFIX=BITS`` (``classifier=4``): a layer-name prefix and its bits, in [low, high]."""

    def __init__(self, low: int, high: int) -> None:
        self.bits = IntRange(low, high)
        self.__name__ = "PREFIX=BITS"

    def problem(self, value: Any) -> Optional[str]:
        for item in value or ():
            if not (isinstance(item, tuple) and len(item) == 2 and item[0]):
                return f"takes (prefix, bits) pairs, not {item!r}"
            problem = self.bits.problem(item[1])
            if problem:
                return f"{item[0]}: bits {problem}"
        return None

    def __call__(self, text: str) -> Tuple[str, int]:
        prefix, _, bits = text.partition("=")
        if not prefix or not bits.strip().isdigit():
            raise argparse.ArgumentTypeError(f"takes PREFIX=BITS (e.g. classifier=4), not {text!r}")
        value = int(bits)
        problem = self.bits.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(f"{prefix}: bits {problem}")
        return (prefix, value)


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one options field is given on the command line."""

    name: str  # "--calib-count"; a name without dashes is a positional argument
    type: Optional[Callable[[str], Any]] = None
    help: Optional[str] = None
    choices: Optional[Sequence[Any]] = None
    action: Optional[str] = None  # "store_true" | "append"
    required: bool = False
    nargs: Optional[str] = None
    metavar: Optional[str] = None

    def add_to(self, parser: Any, dest: str, default: Any) -> None:
        kwargs: Dict[str, Any] = {"help": self.help}
        if self.action:
            kwargs["action"] = self.action
        if self.type is not None:
            kwargs["type"] = self.type
        for key in ("choices", "nargs", "metavar"):
            if getattr(self, key) is not None:
                kwargs[key] = getattr(self, key)
        if self.name.startswith("-"):
            kwargs["dest"] = dest
            if self.required:
                kwargs["required"] = True
            elif self.action != "store_true":
                kwargs["default"] = None  # None: the field's own default (options_from)
            parser.add_argument(self.name, **kwargs)
        else:
            parser.add_argument(dest, **kwargs)


def flag(name: str, default: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field given on the command line as ``name`` (see :class:`Flag` for ``spec``);
    ``default`` may be a zero-argument callable's result via ``default_factory=``."""
    factory = spec.pop("default_factory", dataclasses.MISSING)
    metadata = {FLAG: Flag(name, **spec)}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def internal(
    default: Any = dataclasses.MISSING, *, why: str, default_factory: Any = dataclasses.MISSING
) -> Any:
    """A dataclass field that code sets (``why`` says who), never a flag."""
    metadata = {FLAG: None, "why": why}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(field: dataclasses.Field) -> Optional[Flag]:
    return field.metadata.get(FLAG)


def undeclared(cls: Any) -> List[str]:
    """Fields of ``cls`` made with neither :func:`flag` nor :func:`internal`."""
    return [f.name for f in dataclasses.fields(cls) if FLAG not in f.metadata]


def add_flags(parser: Any, cls: Any, skip: Sequence[str] = (), only: Optional[Sequence[str]] = None) -> None:
    """Add a flag for every :func:`flag` field of ``cls`` to ``parser`` (``only`` those named, and
    none named in ``skip``); ``argparse``'s ``dest`` is the field name."""
    missing = undeclared(cls)
    if missing:
        raise TypeError(f"{cls.__name__}: fields {missing} declare neither a flag nor internal()")
    for field in dataclasses.fields(cls):
        spec = flag_of(field)
        if spec is not None and field.name not in skip and (only is None or field.name in only):
            spec.add_to(parser, field.name, field.default)


def options_from(
    cls: Any, args: argparse.Namespace, only: Optional[Sequence[str]] = None, **overrides: Any
) -> Any:
    """``cls`` from parsed arguments: each flag field from its argument (left unset: the field's
    default), each internal field from ``overrides`` or its default; with ``only``, the other flag
    fields keep their defaults (the verb added only those, :func:`add_flags`). A flag field the arguments lack
    is a programming error and raises (a renamed field must not silently stop arriving)."""
    values: Dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
            continue
        if flag_of(field) is None or (only is not None and field.name not in only):
            continue
        if not hasattr(args, field.name):
            raise TypeError(f"{cls.__name__}.{field.name}: its flag was not added to this parser")
        value = getattr(args, field.name)
        if value is None:
            continue
        if flag_of(field).action == "append" and isinstance(value, list):  # type: ignore[union-attr]
            value = tuple(value)
        values[field.name] = value
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
    return cls(**values)


def validate(options: Any) -> None:
    """Check every flag field's value against its declared range and choices (for options made from
    Python; the parser has checked the command line's already): one line naming the field."""
    for field in dataclasses.fields(options):
        spec = flag_of(field)
        value = getattr(options, field.name)
        if spec is None or value is None:
            continue
        problem = getattr(spec.type, "problem", None)
        message = problem(value) if problem is not None else None
        if message is None and spec.choices is not None and value not in spec.choices:
            message = f"must be one of {', '.join(map(str, spec.choices))}, got {value!r}"
        if message:
            raise EdgeSqueezeError(f"{type(options).__name__}.{field.name} ({spec.name}): {message}")
