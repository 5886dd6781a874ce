"""Argument types for the command lines of both sides (``python -m pyxen.lab``
on the host, the benchmark drivers in dom0): pure parsers that raise
argparse.ArgumentTypeError with the bad text."""

from __future__ import annotations

import argparse
import math


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _int_list(text: str, least: int) -> tuple[int, ...]:
    values = tuple(_int_at_least(part.strip(), least) for part in text.split(","))
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"value listed twice in {text!r}")
    return values


def nonneg_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_int_list(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4): positive integers, none listed twice."""
    return _int_list(text, 1)


def nonneg_int_list(text: str) -> tuple[int, ...]:
    """``"0,64"`` -> (0, 64): integers >= 0, none listed twice."""
    return _int_list(text, 0)


def number_list(text: str) -> tuple[float, ...]:
    """``"0,0.5,2"`` -> (0.0, 0.5, 2.0): finite numbers (what range they
    must lie in is the caller's to check)."""
    values = []
    for part in text.split(","):
        try:
            value = float(part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a comma-separated list of numbers: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {part.strip()!r}")
        values.append(value)
    return tuple(values)


def _number_at_least(text: str, least: float, strict: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < least or (strict and value == least):
        raise argparse.ArgumentTypeError(
            f"must be a number {'>' if strict else '>='} {least:g}, got {text}")
    return value


def positive_number(text: str) -> float:
    return _number_at_least(text, 0.0, strict=True)


def nonneg_number(text: str) -> float:
    return _number_at_least(text, 0.0, strict=False)

