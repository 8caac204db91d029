"""Checks of scalar arguments, shared by every entry point of the package.

One rule and one wording everywhere: a count is an `int` (never a bool) in its
range, a ratio or weight a finite real number in its range, and a refusal is a
`ValueError` that reads "Expected `<argument>` to be <what>. Received:
<argument>=<value>", raised before any work is done.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["check_int", "check_number", "is_int"]


def is_int(value: Any) -> bool:
    """Whether `value` is an integer (Python or numpy), bools excluded."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(
    value: Any,
    argument: str,
    low: int = 1,
    high: int | None = None,
    also: Sequence[Any] = (),
    hint: str | None = None,
) -> Any:
    """`value` as an int in `[low, high]`, or unchanged if it is one of `also`.

    Args:
        value: What the caller passed.
        argument: The argument's name as the caller wrote it (`"steps"`,
            `"ranks['conv']"`), for the message.
        low: The smallest int accepted.
        high: The largest int accepted, or None for no bound.
        also: Other values accepted as they are (None, `"epoch"`, -1, ...).
        hint: What the int means, added to the message in parentheses.

    Raises:
        ValueError: Naming `argument` and `value`.
    """
    if _is_alternative(value, also):
        return value
    if is_int(value) and value >= low and (high is None or value <= high):
        return int(value)
    what = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
    _refuse(argument, value, what, also, hint)


def check_number(
    value: Any,
    argument: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    also: Sequence[Any] = (),
) -> Any:
    """`value` as a finite float in the interval `low..high`, or unchanged if one of `also`.

    Args:
        value: What the caller passed.
        argument: The argument's name, for the message.
        low, high: The interval's ends (None: unbounded on that side).
        low_open, high_open: Whether that end is excluded.
        also: Other values accepted as they are (such as None).

    Raises:
        ValueError: Naming `argument` and `value` (NaN and infinities too).
    """
    if _is_alternative(value, also):
        return value
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low is None or (value > low if low_open else value >= low))
        and (high is None or (value < high if high_open else value <= high))
    )
    if ok:
        return float(value)
    if low is not None and high is not None:
        what = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        what = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        what = f"{'<' if high_open else '<='} {high:g}"
    else:
        what = ""
    _refuse(argument, value, f"a finite number {what}".rstrip(), also, None)


def _is_alternative(value, also):
    """Whether `value` is one of `also`: None by identity, a string or an int by value.

    A bool is never an int here, and numpy scalars count (`np.int64(-1)` is -1).
    """
    for a in also:
        if a is None:
            if value is None:
                return True
        elif isinstance(a, str):
            if isinstance(value, str) and value == a:
                return True
        elif is_int(a) and is_int(value) and value == a:
            return True
    return False


def _refuse(argument, value, what, also, hint):
    alternatives = [f'"{a}"' if isinstance(a, str) else repr(a) for a in also]
    if alternatives:
        what = ", ".join(alternatives) + " or " + what
    if hint:
        what += f" ({hint})"
    raise ValueError(f"Expected `{argument}` to be {what}. Received: {argument}={value!r}")
