"""External ids <-> internal ids, for users and items. Saved with every model.

Internal item ids follow :mod:`seqrec.ids`: item ``vocab.items[j]`` has internal id ``j + FIRST_ITEM``;
internal user ``u`` is ``vocab.users[u]``. External ids keep their type (integers or strings).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqrec.ids import FIRST_ITEM, PAD

SMALL = 4096  # up to this many ids, encode_items looks them up in a dictionary


@dataclass(frozen=True)
class Vocab:
    users: np.ndarray  # [U] external user ids, in internal order
    items: np.ndarray  # [N] external item ids, in internal order (internal id = index + FIRST_ITEM)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def encode_items(self, external) -> np.ndarray:
        """Internal ids for external item ids; unknown items get PAD (callers report them).

        Ids are matched by value: ``"12"`` finds item ``12`` in an integer vocabulary.
        """
        external = list(external)
        if len(external) <= SMALL:
            codes = self._encode_small(external)
            if codes is not None:
                return codes
        values = pd.Series(external, dtype=object)
        if self.items.dtype.kind in "iuf":
            values = pd.to_numeric(values, errors="coerce")  # non-numbers become NaN -> unknown
        else:
            values = values.astype(str)
        codes = pd.Index(self.items).get_indexer(values)
        return np.where(codes >= 0, codes + FIRST_ITEM, PAD).astype(np.int64)

    def _encode_small(self, external: list) -> np.ndarray | None:
        """:meth:`encode_items` of a few ids by a dictionary (a request's history: no pandas call per request);
        None when an id needs pandas' numeric parsing (e.g. "12.0" in an integer vocabulary)."""
        numeric = self.items.dtype.kind in "iu"
        if not numeric and self.items.dtype.kind == "f":
            return None
        keys = []
        for x in external:
            if numeric:
                if isinstance(x, str):
                    if not x.isdigit():
                        try:
                            float(x)
                        except ValueError:  # not a number: unknown, as pandas' parsing makes it
                            keys.append(None)
                            continue
                        return None  # "12.0", "1e3": pandas' parsing decides
                    x = int(x)
                elif not isinstance(x, (int, np.integer)) or isinstance(x, bool):
                    return None
                keys.append(int(x))
            else:
                keys.append(str(x))
        lookup = self._item_lookup
        return np.array([lookup.get(k, PAD) for k in keys], dtype=np.int64)

    @functools.cached_property
    def _item_lookup(self) -> dict:
        return {item: j + FIRST_ITEM for j, item in enumerate(self.items.tolist() if self.items.dtype.kind in "iu"
                                                              else [str(i) for i in self.items.tolist()])}

    def decode_items(self, internal) -> np.ndarray:
        internal = np.asarray(internal, dtype=np.int64)
        return self.items[internal - FIRST_ITEM]

    def encode_users(self, external) -> np.ndarray:
        """Internal user indices; unknown users get -1."""
        return pd.Index(self.users).get_indexer(pd.Index(list(external)))

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        pd.DataFrame({"user_id": self.users}).to_parquet(directory / "vocab_users.parquet", index=False)
        pd.DataFrame({"item_id": self.items}).to_parquet(directory / "vocab_items.parquet", index=False)

    @classmethod
    def load(cls, directory: str | Path) -> "Vocab":
        directory = Path(directory)
        users = pd.read_parquet(directory / "vocab_users.parquet")["user_id"].to_numpy()
        items = pd.read_parquet(directory / "vocab_items.parquet")["item_id"].to_numpy()
        return cls(users=users, items=items)

