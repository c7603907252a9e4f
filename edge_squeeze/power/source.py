"""What every power source offers the sampler (:class:`PowerSource`)."""

from __future__ import annotations

import abc
from typing import Any, Dict, Optional, Sequence

from .samples import Sample


class PowerSource(abc.ABC):
    """A counter to sample: :meth:`read` returns one :class:`Sample` (its ``t`` is set by the
    sampler); the rest says how to add its rails up. Subclasses override what differs."""

    name = "power"

    def __init__(self) -> None:
        self.counter_ranges: Dict[str, float] = {}  # energy counter -> the joules at which it wraps

    @abc.abstractmethod
    def read(self) -> Sample:
        """One reading now; raises OSError when the counter cannot be read any more."""

    def total_rail(self, rails: Sequence[str]) -> Optional[str]:
        """The rail that is the whole board or package, if one is; else the total is a sum."""
        return None

    def top_rails(self, rails: Sequence[str]) -> Sequence[str]:
        """The rails whose sum is the total when no rail is (nested ones left out)."""
        return rails

    def facts(self) -> Dict[str, Any]:
        """What the source knows of the machine's power state (power mode, fixed clocks, device)."""
        return {}

    def close(self) -> None:  # noqa: B027 (most sources hold nothing to release)
        """Release what the source holds (a child process, a library handle)."""


def board_input_rail(rails: Sequence[str]) -> Optional[str]:
    """The rail that measures the whole board's input where the board has one (Orin Nano/NX and
    Xavier: ``VDD_IN``; Nano/TX: ``POM_5V_IN``); AGX Orin has none, and the rails are summed."""
    return next((r for r in ("VDD_IN", "POM_5V_IN") if r in rails), None)
