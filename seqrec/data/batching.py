"""Training batches, one class per batching scheme. Each is built from the training sequences, knows its
number of batches per epoch, and yields an epoch of batches from a ``torch.Generator`` (the only source of
randomness, so a seed fixes every epoch).

- :class:`NextItemBatcher`: left-padded windows of each user's last ``max_len + 1`` items; every
  position predicts the next item (SASRec, GRU4Rec's padded training).
- :class:`ClozeBatcher`: windows of the last ``max_len`` items (optionally sliding windows), a fresh
  random mask every epoch and the Cloze corruption (BERT4Rec).
- :class:`SessionParallelBatcher`: GRU4Rec's session-parallel mini-batches, one event per slot per step.
- :class:`PairBatcher`: shuffled (user, previous item, item) training events with negatives outside the
  user's items (BPR-MF, NCF; FMC, FPMC and TransRec over consecutive pairs).
- :class:`TargetWindowBatcher`: every user's sliding windows of L items followed by T targets (Caser).

Every batch has ``inputs`` (the ids the network reads), ``n_sequences`` and ``n_positions`` (positions
with a training target). Axes: B batch, W window width (trimmed to the batch's longest window).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from seqrec.data.interactions import Interactions
from seqrec.data.sequences import session_parallel, windows
from seqrec.errors import DataError
from seqrec.ids import FIRST_ITEM, PAD, mask_id

BUCKET_BATCHES = 32  # with bucketing, rows are sorted by length within groups of this many batches


def user_windows(train: Interactions, width: int, min_events: int, stride: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded windows [R, width] of the last ``width`` training items of every user with at least
    ``min_events`` events, and their non-padding counts [R].

    ``stride > 0``: a history longer than ``width`` also gives the windows starting ``stride``,
    ``2 stride``, ... items before its last window's start, and one starting at its first item (the sliding
    windows of BERT4Rec's reference data generator, ``gen_data_fin.py``)."""
    lengths = train.lengths
    users = np.flatnonzero(lengths >= min_events)
    if len(users) == 0:
        raise DataError(f"{train.source}: no user has {min_events} training event(s); nothing to learn from")
    starts, lengths = train.offsets[users].astype(np.int64), lengths[users].astype(np.int64)
    ends = starts + lengths
    if stride > 0:
        extra = np.where(lengths > width, -(-(lengths - width) // stride), 0)  # windows before the last one
        user = np.repeat(np.arange(len(users)), extra + 1)
        k = np.arange(len(user)) - np.repeat(np.cumsum(extra + 1) - (extra + 1), extra + 1)  # 0 = last window
        back = np.maximum(ends[user] - k * stride, starts[user] + width)  # the furthest back starts at the first item
        ends = np.where(k > 0, back, ends[user])
        starts, lengths = starts[user], ends - starts[user]
    all_windows = torch.from_numpy(windows(train.items, starts, ends, width))
    return all_windows, torch.from_numpy(np.minimum(lengths, width))


class WindowBatcher:
    """Batches of rows of left-padded ``windows`` [R, W] (``real`` [R] non-padding counts), each trimmed to
    its longest window. Random batches; with ``bucketing``, every shuffled group of 32 batches' worth of
    rows is sorted by length and the batch order shuffled, so a batch carries little padding."""

    mean_positions = 1.0  # training positions of the mean batch (set by each scheme)

    def __init__(self, windows: torch.Tensor, real: torch.Tensor, batch_size: int, bucketing: bool = False):
        self.windows, self.real, self.batch_size, self.bucketing = windows, real, batch_size, bucketing
        self.n_batches = -(-len(windows) // batch_size)

    def __len__(self) -> int:
        return self.n_batches

    def weighted(self, batch):
        """``batch`` with its loss weight: with bucketing, batches differ a lot in their number of training
        positions, and weighting each batch's mean loss by its positions over the mean batch's keeps every
        position's weight equal, as with random batches (unweighted, bucketing lost accuracy); without
        bucketing the weight stays 1 and nothing is counted."""
        if self.bucketing:
            batch.weight = batch.n_positions / self.mean_positions
        return batch

    def window_batches(self, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.windows), generator=generator)
        if self.bucketing:
            group = self.batch_size * BUCKET_BATCHES
            order = torch.cat([part[torch.argsort(self.real[part], stable=True)] for part in order.split(group)])
            starts = torch.randperm(self.n_batches, generator=generator) * self.batch_size
        else:
            starts = torch.arange(self.n_batches) * self.batch_size
        for s in starts.tolist():
            rows = order[s:s + self.batch_size]
            width = int(self.real[rows].max())
            yield self.windows[rows, self.windows.shape[1] - width:]  # trimmed


@dataclass
class NextItemBatch:
    window: torch.Tensor  # [B, W] left-padded; inputs window[:, :-1], targets window[:, 1:]
    weight: float = 1.0  # the loss weight (see WindowBatcher.weighted)

    @property
    def n_sequences(self) -> int:
        return len(self.window)

    @property
    def inputs(self) -> torch.Tensor:
        return self.window[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.window[:, 1:]

    @property
    def mask(self) -> torch.Tensor:
        """[B, W - 1] positions with a target (a target is real wherever its input is)."""
        return self.inputs != PAD

    @property
    def n_positions(self) -> int:
        """Positions with a training target."""
        return int(self.mask.sum())


class NextItemBatcher(WindowBatcher):
    """Each user's last ``max_len + 1`` training items (users with at least 2): ``max_len`` (input,
    next item) pairs, every non-padding position a training target (the SASRec reference's data)."""

    def __init__(self, train: Interactions, max_len: int, batch_size: int, bucketing: bool = False):
        super().__init__(*user_windows(train, max_len + 1, min_events=2), batch_size, bucketing)
        self.mean_positions = float((self.real - 1).clamp(min=0).sum()) / self.n_batches  # targets per batch

    def epoch(self, generator: torch.Generator) -> Iterator[NextItemBatch]:
        for window in self.window_batches(generator):
            yield self.weighted(NextItemBatch(window))


@dataclass
class ClozeBatch:
    window: torch.Tensor  # [B, W] the true items, left-padded
    inputs: torch.Tensor  # [B, W] the corrupted input
    chosen: torch.Tensor  # [B, W] bool: masked positions, the training targets
    weight: float = 1.0  # the loss weight (see WindowBatcher.weighted)

    @property
    def n_sequences(self) -> int:
        return len(self.window)

    @property
    def n_positions(self) -> int:
        """Positions with a training target (the masked ones)."""
        return int(self.chosen.sum())


def cloze_mask(window: torch.Tensor, mask_prob: float, last_mask_prob: float,
               generator: torch.Generator) -> torch.Tensor:
    """Boolean [B, W]: exactly ``max(1, round(length * mask_prob))`` real positions of each left-padded
    window (as BERT's data generator); in a ``last_mask_prob`` share of the windows the last item only."""
    real = window != PAD
    n_mask = torch.clamp(torch.round(real.sum(1) * mask_prob), min=1).to(torch.int64)
    keys = torch.rand(window.shape, generator=generator).masked_fill_(~real, 2.0)
    chosen = keys.argsort(1).argsort(1) < n_mask[:, None]  # the n_mask real positions of lowest key
    if last_mask_prob > 0:
        last = torch.rand(len(window), generator=generator) < last_mask_prob
        chosen[last] = False
        chosen[last, -1] = True  # left padding: the last column is always a real item
    return chosen


def corrupt(window: torch.Tensor, chosen: torch.Tensor, n_items: int, mask_token_share: float,
            generator: torch.Generator) -> torch.Tensor:
    """The training input: chosen positions become ``[mask]`` (or, beyond ``mask_token_share``, a random
    item or themselves, half and half; BERT's 80/10/10 is ``mask_token_share=0.8``)."""
    inputs = window.masked_fill(chosen, mask_id(n_items))
    if mask_token_share < 1.0:
        u = torch.rand(window.shape, generator=generator)
        keep = chosen & (u >= mask_token_share + (1 - mask_token_share) / 2)
        random = chosen & (u >= mask_token_share) & ~keep
        inputs[keep] = window[keep]
        inputs[random] = torch.randint(FIRST_ITEM, FIRST_ITEM + n_items, (int(random.sum()),), generator=generator)
    return inputs


class ClozeBatcher(WindowBatcher):
    """BERT4Rec's training data: each user's last ``max_len`` items (and, with ``stride``, the reference's
    sliding windows), masked afresh every epoch (:func:`cloze_mask`) and corrupted (:func:`corrupt`)."""

    def __init__(self, train: Interactions, max_len: int, batch_size: int, mask_prob: float,
                 mask_token_share: float = 1.0, last_mask_prob: float = 0.0, stride: int = 0,
                 bucketing: bool = False):
        super().__init__(*user_windows(train, max_len, min_events=1, stride=stride), batch_size, bucketing)
        self.n_items, self.mask_prob = train.n_items, mask_prob
        self.mask_token_share, self.last_mask_prob = mask_token_share, last_mask_prob
        expected = torch.clamp(torch.round(self.real * mask_prob), min=1)
        expected = (1 - last_mask_prob) * expected + last_mask_prob
        self.mean_positions = float(expected.sum()) / self.n_batches  # expected masked positions per batch

    def epoch(self, generator: torch.Generator) -> Iterator[ClozeBatch]:
        for window in self.window_batches(generator):
            chosen = cloze_mask(window, self.mask_prob, self.last_mask_prob, generator)
            inputs = corrupt(window, chosen, self.n_items, self.mask_token_share, generator)
            yield self.weighted(ClozeBatch(window, inputs, chosen))


@dataclass
class SessionBatch:
    """One session-parallel step: ``inputs`` [b] (event ``positions``) predict ``targets`` [b]; ``reset``
    [b] marks slots whose session starts here; ``keep`` (None, or bool over the previous step's slots) the
    slots still in use; ``first`` the epoch's first step (no state carried into it)."""

    positions: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor
    reset: torch.Tensor
    keep: torch.Tensor | None
    first: bool

    @property
    def n_sequences(self) -> int:
        return len(self.positions)

    @property
    def n_positions(self) -> int:
        return len(self.positions)


class SessionParallelBatcher:
    """Session-parallel mini-batches (GRU4Rec, Hidasi et al. 2016, Fig. 2) over the sessions with at least
    2 events, in order of their first timestamp (ties by session index), as the official code."""

    shardable = False  # a slot's state runs from step to step: the batches cannot be split over processes

    def __init__(self, train: Interactions, batch_size: int):
        lengths = train.lengths
        sessions = np.flatnonzero(lengths >= 2)
        if len(sessions) == 0:
            raise DataError(f"{train.source}: no session has 2 training events; nothing to learn from")
        start_times = np.asarray(train.times)[train.offsets[sessions]]
        self.order = sessions[np.lexsort((sessions, start_times))]
        self.offsets, self.items, self.batch_size = train.offsets, torch.from_numpy(train.items), batch_size
        n_steps = int((lengths[sessions] - 1).sum())
        self.n_batches = -(-n_steps // min(batch_size, len(sessions)))  # about: slots retire at the end

    def __len__(self) -> int:
        return self.n_batches

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[SessionBatch]:
        first = True
        for positions, reset, keep in session_parallel(self.offsets, self.order, self.batch_size):
            positions = torch.from_numpy(positions)
            yield SessionBatch(positions, self.items[positions], self.items[positions + 1], torch.from_numpy(reset),
                               None if keep is None else torch.from_numpy(keep), first)
            first = False


class UserItems:
    """Membership of (user, item) pairs in a training log (sorted keys + binary search), and uniform
    negatives outside each user's items, drawn by rejection without a Python loop over rows."""

    def __init__(self, train: Interactions):
        users = np.repeat(np.arange(train.n_users, dtype=np.int64), train.lengths)
        self.n_items, self.width = train.n_items, train.n_items + FIRST_ITEM
        self.keys = torch.from_numpy(np.unique(users * self.width + train.items.astype(np.int64)))

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool tensor of ``items``' shape: is ``items[b, ...]`` one of user ``users[b]``'s items?"""
        keys = users.reshape(-1, *([1] * (items.dim() - 1))) * self.width + items
        if len(self.keys) == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        found = torch.searchsorted(self.keys, keys.reshape(-1)).clamp_(max=len(self.keys) - 1)
        return (self.keys[found] == keys.reshape(-1)).reshape(keys.shape)

    def negatives(self, users: torch.Tensor, n: int, generator: torch.Generator, max_rounds: int = 50
                  ) -> torch.Tensor:
        """[B, n] uniform internal ids outside each user's training items (with replacement across a row).
        After ``max_rounds`` redraws (a user holding almost the whole catalogue) the few left stand."""
        items = torch.randint(FIRST_ITEM, FIRST_ITEM + self.n_items, (len(users), n), generator=generator)
        for _ in range(max_rounds):
            clash = self.contains(users, items)
            n_clash = int(clash.sum())
            if n_clash == 0:
                break
            items[clash] = torch.randint(FIRST_ITEM, FIRST_ITEM + self.n_items, (n_clash,), generator=generator)
        return items


class UserRowBatcher:
    """Shuffled rows of per-user training examples, each batch with ``n_negatives`` uniform negatives per row
    outside the row's user's training items; a subclass sets ``users`` [R], ``seen`` and ``_batch``."""

    users: torch.Tensor
    seen: UserItems
    batch_size: int
    n_negatives: int

    def __len__(self) -> int:
        return -(-len(self.users) // self.batch_size)

    def epoch(self, generator: torch.Generator):
        order = torch.randperm(len(self.users), generator=generator)
        for rows in order.split(self.batch_size):
            users = self.users[rows]
            yield self._batch(rows, users, self.seen.negatives(users, self.n_negatives, generator))

    def _batch(self, rows: torch.Tensor, users: torch.Tensor, negatives: torch.Tensor):
        raise NotImplementedError


@dataclass
class PairBatch:
    users: torch.Tensor  # [B] internal user indices
    previous: torch.Tensor  # [B] the item before ``items`` in the user's sequence (PAD for plain pairs)
    items: torch.Tensor  # [B] the positive items
    negatives: torch.Tensor  # [B, K] items outside the user's training items

    @property
    def n_sequences(self) -> int:
        return len(self.items)

    n_positions = n_sequences

    @property
    def inputs(self) -> torch.Tensor:
        return self.previous


class PairBatcher(UserRowBatcher):
    """Every training event (``consecutive=False``: BPR-MF, NCF) or every event with a previous one in its
    user's sequence (``consecutive=True``: the transitions of FMC, FPMC, TransRec), shuffled each epoch,
    with ``n_negatives`` uniform negatives per event outside the user's training items (BPR's and S-BPR's
    sampling). One epoch visits every event once (a shuffled pass, where Rendle et al. draw events with
    replacement; the expected updates are the same)."""

    def __init__(self, train: Interactions, batch_size: int, n_negatives: int, consecutive: bool):
        users = np.repeat(np.arange(train.n_users, dtype=np.int64), train.lengths)
        position = np.arange(train.n_events) - np.repeat(train.offsets[:-1], train.lengths)
        keep = position >= 1 if consecutive else np.ones(train.n_events, dtype=bool)
        index = np.flatnonzero(keep)
        if len(index) == 0:
            raise DataError(f"{train.source}: no user has {2 if consecutive else 1} training event(s); "
                            "nothing to learn from")
        items = train.items.astype(np.int64)
        self.users = torch.from_numpy(users[index])
        self.items = torch.from_numpy(items[index])
        self.previous = torch.from_numpy(items[index - 1] if consecutive else np.full(len(index), PAD, np.int64))
        self.seen = UserItems(train)
        self.batch_size, self.n_negatives = batch_size, n_negatives

    def _batch(self, rows: torch.Tensor, users: torch.Tensor, negatives: torch.Tensor) -> PairBatch:
        return PairBatch(users, self.previous[rows], self.items[rows], negatives)


@dataclass
class TargetWindowBatch:
    users: torch.Tensor  # [B]
    inputs: torch.Tensor  # [B, L] left-padded
    targets: torch.Tensor  # [B, T] (PAD where a short history has fewer targets)
    negatives: torch.Tensor  # [B, K]

    @property
    def n_sequences(self) -> int:
        return len(self.inputs)

    @property
    def n_positions(self) -> int:
        return int((self.targets != PAD).sum())


class TargetWindowBatcher(UserRowBatcher):
    """Caser's training windows (Tang & Wang 2018; the authors' ``to_sequence``): every user's windows of
    ``L + T`` consecutive items, sliding by one; a user with fewer than ``L + T`` items gives one window,
    left-padded. The first ``L`` items are the input, the last ``T`` the targets; ``n_negatives`` uniform
    negatives per window lie outside the user's training items. Shuffled each epoch."""

    def __init__(self, train: Interactions, length: int, n_targets: int, batch_size: int, n_negatives: int):
        width = length + n_targets
        lengths = train.lengths.astype(np.int64)
        users = np.flatnonzero(lengths >= 2)
        if len(users) == 0:
            raise DataError(f"{train.source}: no user has 2 training events; nothing to learn from")
        lengths = lengths[users]
        count = np.maximum(lengths - width + 1, 1)  # windows per user
        user = np.repeat(users, count)
        first_end = np.minimum(lengths, width)  # the end (exclusive, within the user) of each user's first window
        ends = (train.offsets[user] + np.repeat(first_end, count)
                + np.arange(len(user)) - np.repeat(np.cumsum(count) - count, count))
        rows = torch.from_numpy(windows(train.items, train.offsets[user], ends, width))
        self.users, self.inputs, self.targets = torch.from_numpy(user), rows[:, :length], rows[:, length:]
        self.seen = UserItems(train)
        self.batch_size, self.n_negatives = batch_size, n_negatives

    def _batch(self, rows: torch.Tensor, users: torch.Tensor, negatives: torch.Tensor) -> TargetWindowBatch:
        return TargetWindowBatch(users, self.inputs[rows], self.targets[rows], negatives)
