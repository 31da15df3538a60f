"""The id layout, defined once.

Internal item ids are dense integers::

    0              PAD   (left padding of sequences; never a real item, never recommended)
    1 .. n_items   real items, in vocabulary order
    n_items + 1    MASK  (reserved for masked-item models such as BERT4Rec)

Every mask in the package is derived from these ids (``ids != PAD``), never from embedding values.
Users are indexed ``0 .. n_users - 1`` and have no special ids.
"""

from __future__ import annotations

PAD = 0
FIRST_ITEM = 1


def n_embeddings(n_items: int, with_mask: bool = False) -> int:
    """Rows an item-embedding table needs: PAD + items (+ MASK)."""
    return n_items + 1 + int(with_mask)


def mask_id(n_items: int) -> int:
    """The MASK id for a catalogue of ``n_items`` items."""
    return n_items + 1
