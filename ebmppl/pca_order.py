"""Where the whitening puts the principal components, so that coupling layers mix them (both backends).

Example:
    >>> from ebmppl.pca_order import interleaved_slots
    >>> interleaved_slots(5, first_size=3)
    [0, 3, 1, 4, 2]
"""

from __future__ import annotations

__all__ = ["interleaved_slots"]


def interleaved_slots(dim: int, first_size: int) -> list[int]:
    """Slots for principal components sorted by decreasing variance.

    Coupling layers split coordinates into a first group ``[0, first_size)``
    and the rest; putting components 1, 3, 5... in the first group and 2, 4,
    6... in the second makes the two largest directions condition each other
    in every layer, whatever the dimension.
    """
    first, second = list(range(first_size)), list(range(first_size, dim))
    slots = []
    for k in range(dim):
        source = first if (k % 2 == 0 and first) or not second else second
        slots.append(source.pop(0))
    return slots
