"""Argument types for the command lines of both sides (``python -m pyxen.lab``
on the host, the benchmark drivers in dom0): pure parsers that raise
argparse.ArgumentTypeError with the bad text."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_int_list(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4): positive integers, none listed twice."""
    values = tuple(positive_int(part.strip()) for part in text.split(","))
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"value listed twice in {text!r}")
    return values


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
