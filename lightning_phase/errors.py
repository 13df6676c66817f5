"""One error type for every bad value a user can type (ConfigError), and one for a broken contract between the
package's parts (ContractError: a module, data module or step output without what a callback reads)."""

from __future__ import annotations

import math


class ConfigError(ValueError):
    """A bad configuration value: the message names the field, the value and what is accepted.

    The CLI prints the message on one line and exits with status 2.
    """

    def __init__(self, field: str, value: object, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}: got {value!r}; expected {expected}")


class ContractError(TypeError):
    """A module, data module or training-step output lacks what a reader needs (lightning_phase.contracts);
    the message names the reader, what is missing and what is there. A programming error, not bad input."""


def check_choice(field: str, value: object, choices) -> None:
    """Raise ConfigError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(field, value, "one of " + ", ".join(repr(c) for c in choices))


def check_bool(field: str, value: object) -> bool:
    """Raise ConfigError unless ``value`` is true or false (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise ConfigError(field, value, "true or false")
    return value


def check_positive_int(field: str, value: object, minimum: int = 1) -> int:
    """Raise ConfigError unless ``value`` is an integer >= ``minimum`` (bools are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, value, f"an integer >= {minimum}")
    return value


def check_positive_float(field: str, value: object, allow_zero: bool = False) -> float:
    """Raise ConfigError unless ``value`` is a finite real number > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (value >= 0 if allow_zero else value > 0):
        raise ConfigError(field, value, "a finite number " + (">= 0" if allow_zero else "> 0"))
    return float(value)
