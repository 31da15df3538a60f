"""The estimators users touch: ``fit`` / ``recommend`` / ``save`` / ``load``.

Contract (scikit-learn's): ``__init__`` only stores parameters; ``fit`` returns ``self`` and starts
fresh; fitted state lives in ``vocab_``, ``net_``, ``histories_``, ``train_result_``; methods that need
it raise :class:`~seqrec.errors.NotFittedError` before ``fit``.
This is the only layer that knows data, networks, losses and evaluation together.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from seqrec import losses, samplers
from seqrec.data.interactions import Interactions, read_interactions
from seqrec.data.sequences import ranges, windows
from seqrec.data.splits import EvalSet
from seqrec.data.vocab import Vocab
from seqrec.errors import ConfigError, DataError, NotFittedError, choose
from seqrec.ids import FIRST_ITEM, PAD
from seqrec.nn.sasrec import SASRecNet
from seqrec.train import TrainResult, train_loop
from seqrec.version import __version__

log = logging.getLogger(__name__)
DEVICES = ("cpu", "cuda")
_SCORE_BATCH = 1024
_BUCKET_BATCHES = 32


class SequentialRecommender:
    """Shared machinery of next-item models that read left-padded windows of the last ``max_len`` items."""

    name = ""
    max_len: int
    device: str

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in inspect.signature(type(self).__init__).parameters if p != "self"}

    def describe(self) -> dict:
        return {"name": self.name, **{k: v for k, v in self.get_params().items() if k != "progress"}}

    # ---- fitting -------------------------------------------------------------------------------
    def fit(self, train, valid: EvalSet | None = None) -> "SequentialRecommender":
        """Train on ``train`` (Interactions, DataFrame or path); early-stop on ``valid`` if given."""
        if not isinstance(train, Interactions):
            train = read_interactions(train)
        if valid is not None and valid.log.n_items != train.n_items:
            raise DataError("the validation set was built from other data than the training set")
        choose("device", self.device.split(":")[0], DEVICES)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available; use --device cpu")
        self.vocab_, self.histories_ = train.vocab, train
        generator = torch.Generator().manual_seed(self.seed)
        fork = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=fork):  # init and dropout are seeded; caller's RNG untouched
            torch.manual_seed(self.seed)
            self.net_ = self._build_net(train.n_items).to(self.device)
            batches, n_batches, step_loss = self._training(train, generator)
            validate = None
            if valid is not None and len(valid):
                from seqrec.evaluate import evaluate

                validate = lambda: evaluate(self, valid, k=(10,))["metrics"]  # noqa: E731
            self.train_result_ = train_loop(self.net_, batches, n_batches, step_loss, validate,
                                            epochs=self.epochs, patience=self.patience, lr=self.lr,
                                            generator=generator, progress=self.progress)
        return self

    def set_histories(self, log: Interactions) -> "SequentialRecommender":
        """Use ``log`` (same vocabulary) as the known users' histories for :meth:`recommend_users`."""
        self._check_fitted()
        if log.n_items != self.vocab_.n_items or not np.array_equal(log.vocab.items, self.vocab_.items):
            raise DataError("histories must use the model's item vocabulary")
        self.histories_, self.vocab_ = log, log.vocab
        return self

    # ---- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def score_windows(self, item_windows: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [R, N] (float32, CPU) of every real item after each left-padded window [R, max_len].

        ``out`` (a float32 CPU tensor [R, N]) receives the scores when given, saving an allocation.
        """
        self._check_fitted()
        self.net_.eval()
        x = torch.from_numpy(np.ascontiguousarray(item_windows))
        width = int((x != PAD).sum(1).max()) if len(x) else 1
        x = x[:, x.shape[1] - max(width, 1):].to(self.device)  # trim common left padding
        if self.device == "cpu":
            return self._score_last(x, out)
        scores = self._score_last(x).float().cpu()
        return scores if out is None else out.copy_(scores)

    def encode_histories(self, histories) -> tuple[list[np.ndarray], list]:
        """Internal-id histories for lists of external item ids, and the unknown ids that were dropped."""
        self._check_fitted()
        histories = [list(h) for h in histories]
        flat = [item for h in histories for item in h]
        codes = self.vocab_.encode_items(flat) if flat else np.zeros(0, dtype=np.int64)
        unknown = [item for item, code in zip(flat, codes) if code == PAD]
        bounds = np.cumsum([0] + [len(h) for h in histories])
        return [codes[a:b][codes[a:b] != PAD] for a, b in zip(bounds[:-1], bounds[1:])], unknown

    def recommend(self, histories, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (external item ids [n, k], scores [n, k]) for new histories of external item ids.

        Unknown items are ignored and reported in a warning (see :meth:`encode_histories` for the list).
        """
        encoded, unknown = self.encode_histories(histories)
        if unknown:
            log.warning("ignored %d unknown item id(s): %s", len(unknown), unknown[:10])
        lengths = np.array([len(h) for h in encoded], dtype=np.int64)
        flat = np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        ids, scores = self._top_k(flat, starts, starts + lengths, k, exclude_seen)
        return self.vocab_.decode_items(ids), scores

    def recommend_users(self, users="all", k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-``k`` for known users from their stored histories: columns user_id, rank, item_id, score."""
        self._check_fitted()
        if isinstance(users, str) and users == "all":
            index = np.arange(self.vocab_.n_users)
        else:
            index = self.vocab_.encode_users(list(users))
            if (index < 0).any():
                bad = [u for u, i in zip(users, index) if i < 0]
                raise DataError(f"{len(bad)} unknown user id(s): {bad[:10]}")
        offsets = self.histories_.offsets
        ids, scores = self._top_k(self.histories_.items, offsets[index], offsets[index + 1], k, exclude_seen)
        frame = pd.DataFrame({
            "user_id": np.repeat(self.vocab_.users[index], ids.shape[1]),
            "rank": np.tile(np.arange(1, ids.shape[1] + 1), len(index)),
            "item_id": self.vocab_.decode_items(ids.reshape(-1)),
            "score": scores.reshape(-1),
        })
        return frame[np.isfinite(frame["score"].to_numpy())].reset_index(drop=True)

    def _top_k(self, items, starts, ends, k, exclude_seen) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and scores [R, k] of the best items after each history items[starts:ends]."""
        self._check_fitted()
        k = min(int(k), self.vocab_.n_items)
        if k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        out_ids, out_scores = [], []
        for s in range(0, len(starts), _SCORE_BATCH):
            st, en = starts[s:s + _SCORE_BATCH], ends[s:s + _SCORE_BATCH]
            scores = self.score_windows(windows(items, st, en, self.max_len))
            if exclude_seen:
                rows, seen = np.repeat(np.arange(len(st)), en - st), items[ranges(st, en - st)]
                scores[torch.from_numpy(rows), torch.from_numpy(seen - FIRST_ITEM)] = float("-inf")
            top = torch.topk(scores, k, dim=1)
            out_ids.append(top.indices.numpy() + FIRST_ITEM)
            out_scores.append(top.values.numpy())
        if not out_ids:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate(out_ids), np.concatenate(out_scores)

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write config.json, vocabulary, weights (safetensors), histories and training history."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"model": self.name, "params": self.get_params(), "n_items": self.vocab_.n_items,
                  "seqrec_version": __version__}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        self.vocab_.save(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(state, str(directory / "weights.safetensors"))
        h = self.histories_
        np.savez(directory / "histories.npz", offsets=h.offsets, items=h.items, times=h.times)
        if getattr(self, "train_result_", None) is not None:
            (directory / "history.json").write_text(json.dumps(self.train_result_.to_dict(), indent=2) + "\n")
        return directory

    @classmethod
    def _load(cls, directory: Path, config: dict, device: str | None) -> "SequentialRecommender":
        params = dict(config["params"])
        if device is None and params.get("device", "cpu").startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"  # a model trained on a GPU still loads on a CPU-only machine
        if device is not None:
            params["device"] = device
        model = cls(**params)
        model.vocab_ = Vocab.load(directory)
        with np.load(directory / "histories.npz", allow_pickle=False) as data:
            model.histories_ = Interactions(model.vocab_, data["offsets"], data["items"], data["times"],
                                            source=str(directory / "histories.npz"))
        model.net_ = model._build_net(model.vocab_.n_items)
        model.net_.load_state_dict(load_file(str(directory / "weights.safetensors"), device="cpu"))
        model.net_.to(model.device).eval()
        history = directory / "history.json"
        if history.is_file():
            data = json.loads(history.read_text())
            model.train_result_ = TrainResult([], data["best_epoch"], data["best_metric"])
        return model

    def _check_fitted(self) -> None:
        if getattr(self, "net_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or seqrec.load() first")

    # ---- hooks for each model ------------------------------------------------------------------
    def _build_net(self, n_items: int) -> torch.nn.Module:
        raise NotImplementedError

    def _training(self, train: Interactions, generator: torch.Generator):
        raise NotImplementedError

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [R, N] of every real item after the last position of each window x [R, L]."""
        raise NotImplementedError


class SASRec(SequentialRecommender):
    """SASRec (Kang & McAuley, ICDM 2018) trained on all positions of each user's sequence.

    Network: :class:`seqrec.nn.sasrec.SASRecNet` (see its docstring for fidelity notes).
    Training follows the reference: each user's last ``max_len + 1`` training items give ``max_len``
    (input, next-item) pairs; every non-padding position is a training target. Losses:
    ``bce`` (one uniform negative per position, not in the user's window: the reference excludes the
    user's whole training set, we exclude the ``max_len + 1`` items of the window), ``ce`` (full softmax),
    ``sampled_ce`` (``n_negatives`` uniform negatives shared by a sequence's positions; a negative equal to
    the position's target is dropped from that position's softmax). Adam with betas (0.9, 0.98) as the
    reference. ``bucketing=True`` (off by default) shuffles the users every epoch, sorts each group of 32
    batches' worth by length and shuffles the batch order, so a batch carries little padding: faster
    (MovieLens-100K, max_len 200: 2.3 s instead of 4.7 s an epoch). Each batch's loss is then weighted by
    its share of the epoch's positions, so that every position weighs the same as with random batches;
    without that weighting, bucketing cost 11 % test NDCG@10 on Amazon Beauty (S3-Rec file, 0.0487 vs
    0.0548) and 19 % on MovieLens-100K (0.0899 vs 0.1114). ``bf16=True`` runs the network under CPU/CUDA
    bf16 autocast and the CE matrix products in bf16.
    Defaults follow the paper (dim 64, 2 blocks, 1 head, lr 1e-3, batch 128; max_len 50 suits Amazon
    data, use 200 for MovieLens); dropout 0.2 is the paper's ML-1M value (it used 0.5 on sparse Amazon data).
    """

    name = "sasrec"

    def __init__(self, loss: str = "ce", max_len: int = 50, dim: int = 64, n_heads: int = 1, n_blocks: int = 2,
                 dropout: float = 0.2, attn_dropout: float | None = None, n_negatives: int = 256, lr: float = 1e-3,
                 batch_size: int = 128, bucketing: bool = False, epochs: int = 200, patience: int = 10,
                 seed: int = 0, device: str = "cpu", bf16: bool = False, progress: bool = True):
        self.loss, self.max_len, self.dim, self.n_heads, self.n_blocks = loss, max_len, dim, n_heads, n_blocks
        self.dropout, self.attn_dropout, self.n_negatives = dropout, attn_dropout, n_negatives
        self.lr, self.batch_size, self.bucketing = lr, batch_size, bucketing
        self.epochs, self.patience, self.seed, self.device = epochs, patience, seed, device
        self.bf16, self.progress = bf16, progress

    def _build_net(self, n_items: int) -> SASRecNet:
        losses.check_loss(self.loss)
        return SASRecNet(n_items, self.max_len, self.dim, self.n_heads, self.n_blocks, self.dropout,
                         self.attn_dropout)

    def _autocast(self):
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16)

    def _score_last(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        with self._autocast():
            hidden = self.net_(x)[:, -1]  # [R, D]
        return self.net_.score(hidden.float(), out=out)

    def _training(self, train: Interactions, generator: torch.Generator):
        lengths = train.lengths
        users = np.flatnonzero(lengths >= 2)
        if len(users) == 0:
            raise DataError(f"{train.source}: no user has 2 training events; nothing to learn from")
        starts = train.offsets[users]
        all_windows = torch.from_numpy(windows(train.items, starts, starts + lengths[users], self.max_len + 1))
        real = torch.from_numpy(np.minimum(lengths[users], self.max_len + 1))  # [U] non-padding per window
        n_batches = -(-len(users) // self.batch_size)
        net, n_items, dtype = self.net_, train.n_items, torch.bfloat16 if self.bf16 else torch.float32

        def batches(gen):
            order = torch.randperm(len(users), generator=gen)
            if self.bucketing:  # sort each shuffled group of 32 batches by length: little padding per batch
                group = self.batch_size * _BUCKET_BATCHES
                order = torch.cat([part[torch.argsort(real[part], stable=True)] for part in order.split(group)])
                starts = torch.randperm(n_batches, generator=gen) * self.batch_size
            else:
                starts = torch.arange(n_batches) * self.batch_size
            for s in starts.tolist():
                rows = order[s:s + self.batch_size]
                width = int(real[rows].max())
                yield len(rows), all_windows[rows, all_windows.shape[1] - width:]  # [B, T+1], trimmed

        # With bucketing, batches differ a lot in their number of positions; weighting each batch's mean by
        # its share of positions keeps every position's weight equal, as with random batches.
        positions_per_batch = float((real - 1).clamp(min=0).sum()) / n_batches

        def step_loss(window: torch.Tensor) -> torch.Tensor:
            inputs, targets = window[:, :-1], window[:, 1:]  # [B, T]
            mask = inputs != PAD  # a target is real wherever its input is
            weight = float(mask.sum()) / positions_per_batch if self.bucketing else 1.0
            return weight * position_loss(inputs, targets, mask, window)

        def position_loss(inputs, targets, mask, window) -> torch.Tensor:
            with self._autocast():
                hidden = net(inputs.to(self.device))
            hidden, mask, targets = hidden.float(), mask.to(self.device), targets.to(self.device)
            if self.loss == "ce":
                return losses.ce(hidden[mask], net.item_weights(), targets[mask] - FIRST_ITEM, dtype)
            table = net.item_emb.weight
            positive = (hidden * table[targets]).sum(-1)  # [B, T]
            if self.loss == "bce":
                negatives = samplers.uniform_items(n_items, tuple(inputs.shape), generator, exclude=window)
                negative = (hidden * table[negatives.to(self.device)]).sum(-1)
                return losses.bce(positive[mask], negative[mask])
            negatives = samplers.uniform_items(n_items, (len(inputs), self.n_negatives), generator).to(self.device)
            negative = torch.bmm(hidden, table[negatives].transpose(1, 2))  # [B, T, K]
            clash = negatives[:, None, :] == targets[:, :, None]  # [B, T, K]
            return losses.sampled_ce(positive[mask], negative[mask], clash[mask])

        return batches, n_batches, step_loss


MODELS = {"sasrec": SASRec}


def load(directory, device: str | None = None) -> SequentialRecommender:
    """Load a model saved by :meth:`SequentialRecommender.save` (no pickled objects are read)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise DataError(f"{directory}: not a run directory (no config.json)")
    config = json.loads(config_path.read_text())
    cls = MODELS[choose("model", config["model"], MODELS)]
    return cls._load(directory, config, device)
