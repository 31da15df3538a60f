"""The estimator contract every model implements, sequential or not, and the shared training of the
neural ones.

:class:`Recommender` (scikit-learn's contract, implicit's API): options are declared once as typed class
attributes (:mod:`seqrec.options`), ``__init__`` only stores them, ``set_params`` / ``get_params`` /
``clone`` work on them; ``fit(train, valid=None)`` returns ``self`` and starts fresh; fitted state ends in
``_`` (``vocab_``, ``histories_``, and per model e.g. ``net_``); ``recommend`` / ``recommend_users`` /
``score`` before ``fit`` raise :class:`~seqrec.errors.NotFittedError`. A model supplies ``fit`` and
``score``; ranking (seen items, candidate items, top-k) is :mod:`seqrec.ranking`'s, one path for all.

:class:`NeuralRecommender` adds the training options and the training loop: a model supplies its network
(``_build_net``), its batcher (``_batcher``), the loss of a batch (``_batch_loss``) and optionally its
optimiser; everything else (seeding, devices, validation, early stopping, refit, persistence of the
weights) is here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from seqrec import distributed, losses, ranking, rundir, samplers
from seqrec.data.interactions import Interactions, read_interactions
from seqrec.data.sequences import Histories
from seqrec.data.splits import EvalSet
from seqrec.errors import ConfigError, DataError, NotFittedError
from seqrec.evaluate import evaluate
from seqrec.ids import FIRST_ITEM, PAD
from seqrec.models.objectives import position_loss
from seqrec.nn.layers import SequenceNet
from seqrec.optim import ADAM_BETAS, make_optimizer
from seqrec.options import Options, between, choice, option, span
from seqrec.train import Callback, TrainResult, train_loop

log = logging.getLogger(__name__)
DEVICES = ("cpu", "cuda")
SCORE_BATCH = 1024  # histories scored at once by recommend / recommend_users ...
SCORE_ELEMENTS = 1 << 26  # ... at most this many scores (256 MiB in fp32) per pass: fewer rows for huge catalogues


def scoring_rows(n_items: int) -> int:
    """Histories ranked per pass by :meth:`Recommender.rank`: ``SCORE_BATCH``, fewer for a catalogue so large
    that their scores would pass ``SCORE_ELEMENTS``."""
    return max(1, min(SCORE_BATCH, SCORE_ELEMENTS // n_items))


class Recommender(Options):
    """The estimator contract (see the module docstring)."""

    name = ""  # the registry name (seqrec.models.MODELS)

    # ---- what each model supplies --------------------------------------------------------------
    def fit(self, train, valid: EvalSet | None = None) -> "Recommender":
        raise NotImplementedError

    def score(self, histories: Histories, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [R, N] of every real item (column j = internal id ``j + FIRST_ITEM``) after each history,
        on the model's device. ``out`` (a float32 CPU tensor [R, N]) may receive them on a CPU."""
        raise NotImplementedError

    def score_candidates(self, histories: Histories, candidates: torch.Tensor,
                         out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [R, C] of the internal item ids ``candidates`` [R, C] after each history (the sampled
        protocol's few candidates): the full scores (into ``out`` as :meth:`score`), gathered; a model that
        scores (user, item) pairs one by one (NCF) computes only these."""
        scores = self.score(histories, out=out)
        return scores.gather(1, candidates.to(scores.device) - FIRST_ITEM)

    def state(self) -> dict[str, torch.Tensor]:
        """The fitted tensors to persist (weights.safetensors)."""
        raise NotImplementedError

    def restore(self, vocab, histories: Interactions, state: dict[str, torch.Tensor],
                train_result: TrainResult | None) -> "Recommender":
        """Rebuild the fitted model from what :meth:`state` saved (and the vocabulary and histories)."""
        raise NotImplementedError

    # ---- shared ----------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        """Write the fitted model to a run directory (atomically; see :mod:`seqrec.rundir`)."""
        return rundir.save(self, directory)

    @classmethod
    def load(cls, directory, device: str | None = None) -> "Recommender":
        """A model of this class saved by :meth:`save` (``seqrec.load`` reads any model)."""
        return rundir.load(directory, {cls.name: cls}, device)

    def check_data_parallel(self) -> None:
        """Raise a ConfigError if this configuration cannot train over several processes."""
        raise ConfigError(f"{self.name} has no training loop to split over processes; train it with --devices 1")

    def refit(self, train, seed: int | None = None) -> "Recommender":
        """A fresh model with these options (and ``seed`` if given) fitted on ``train`` (a model without epochs
        to select has no selection to carry over; :meth:`NeuralRecommender.refit` keeps the selected epoch
        count)."""
        self._check_fitted()
        model = self.clone()
        if seed is not None and "seed" in self.option_fields():
            model.set_params(seed=seed)
        model = model.fit(train)
        model.refit_of_ = {}
        return model

    def describe(self) -> dict:
        return {"name": self.name, **{k: v for k, v in self.get_params().items() if k != "progress"}}

    def _start_fit(self, train) -> Interactions:
        """Validate the options, read ``train`` if it is a path or a DataFrame, and drop fitted state."""
        self.validate()
        if not isinstance(train, Interactions):
            train = read_interactions(train)
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, name)
        self.vocab_, self.histories_ = train.vocab, train
        return train

    def _check_fitted(self) -> None:
        if getattr(self, "vocab_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or seqrec.load() first")

    def set_histories(self, log: Interactions) -> "Recommender":
        """Use ``log`` (same item vocabulary) as the known users' histories for :meth:`recommend_users`."""
        self._check_fitted()
        if log.n_items != self.vocab_.n_items or not np.array_equal(log.vocab.items, self.vocab_.items):
            raise DataError("histories must use the model's item vocabulary")
        self.histories_, self.vocab_ = log, log.vocab
        return self

    def encode_histories(self, histories) -> tuple[list[np.ndarray], list[list]]:
        """Internal-id histories for lists of external item ids (one vocabulary lookup for all), and per
        history the unknown ids that were dropped."""
        self._check_fitted()
        histories = [list(h) for h in histories]
        flat = [item for h in histories for item in h]
        codes = self.vocab_.encode_items(flat) if flat else np.zeros(0, dtype=np.int64)
        bounds = np.cumsum([0] + [len(h) for h in histories])
        missing = set(np.flatnonzero(codes == PAD).tolist())
        unknown = [[flat[i] for i in range(a, b) if i in missing] if missing else []
                   for a, b in zip(bounds[:-1], bounds[1:])]
        return [codes[a:b][codes[a:b] != PAD] for a, b in zip(bounds[:-1], bounds[1:])], unknown

    def recommend(self, histories: Sequence[Sequence], k: int = 10, exclude_seen: bool = True,
                  items: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (external item ids [n, k], scores [n, k]) for new histories of external item ids.

        ``exclude_seen`` filters each history's items out; ``items`` (external ids) restricts the candidates
        (as implicit's ``items=``). Unknown history items are ignored and reported in a warning (see
        :meth:`encode_histories`); unknown candidate items are an error. Where fewer than ``k`` candidates
        remain, the tail of a row has score -inf.
        """
        encoded, unknown = self.encode_histories(histories)
        unknown = [item for row in unknown for item in row]
        if unknown:
            log.warning("ignored %d unknown item id(s): %s", len(unknown), unknown[:10])
        ids, scores = self.rank(Histories.from_lists(encoded), k, exclude_seen, items)
        return self.vocab_.decode_items(ids), scores

    def recommend_users(self, users="all", k: int = 10, exclude_seen: bool = True,
                        items: Sequence | None = None) -> pd.DataFrame:
        """Top-``k`` for known users from their stored histories: columns user_id, rank, item_id, score
        (rows whose score is -inf, when fewer than ``k`` candidates remain, are left out). For millions of
        users, :meth:`iter_recommend_users` yields the same rows a chunk of users at a time."""
        frames = list(self.iter_recommend_users(users, k, exclude_seen, items))
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def iter_recommend_users(self, users="all", k: int = 10, exclude_seen: bool = True,
                             items: Sequence | None = None, chunk: int = 65536):
        """:meth:`recommend_users` as DataFrames of ``chunk`` users each (memory bounded by the chunk and
        the scoring pass, whatever the number of users); at least one frame, possibly empty."""
        self._check_fitted()
        if isinstance(users, str) and users == "all":
            index = np.arange(self.vocab_.n_users)
        else:
            index = self.vocab_.encode_users(list(users))
            if (index < 0).any():
                bad = [u for u, i in zip(users, index) if i < 0]
                raise DataError(f"{len(bad)} unknown user id(s): {bad[:10]}")
        offsets = self.histories_.offsets
        for start in range(0, max(len(index), 1), chunk):
            part = index[start:start + chunk]
            batch = Histories(self.histories_.items, offsets[part], offsets[part + 1], part)
            ids, scores = self.rank(batch, k, exclude_seen, items)
            frame = pd.DataFrame({
                "user_id": np.repeat(self.vocab_.users[part], ids.shape[1]),
                "rank": np.tile(np.arange(1, ids.shape[1] + 1), len(part)),
                "item_id": self.vocab_.decode_items(ids.reshape(-1)),
                "score": scores.reshape(-1),
            })
            yield frame[np.isfinite(frame["score"].to_numpy())].reset_index(drop=True)

    def candidate_ids(self, items: Sequence) -> np.ndarray:
        """Internal ids of the external candidate ids ``items``; an unknown one is a DataError naming it."""
        items = list(items)
        codes = self.vocab_.encode_items(items)
        if (codes == PAD).any():
            bad = [item for item, code in zip(items, codes) if code == PAD]
            raise DataError(f"{len(bad)} unknown candidate item id(s): {bad[:10]}")
        return codes

    def rank(self, histories: Histories, k: int = 10, exclude_seen: bool = True,
             items: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Internal ids and scores [R, min(k, N)] of the best candidates after each encoded history (the
        ranking behind :meth:`recommend`, :meth:`recommend_users` and the service); ``items`` are external
        candidate ids as in :meth:`recommend`."""
        self._check_fitted()
        k = min(int(k), self.vocab_.n_items)
        if k < 1:
            raise ConfigError(f"k must be a positive integer, got {k}")
        candidates = None if items is None else ranking.candidate_mask(self.vocab_.n_items, self.candidate_ids(items))
        out_ids, out_scores = [], []
        rows = scoring_rows(self.vocab_.n_items)
        for s in range(0, len(histories), rows):
            part = histories.subset(slice(s, s + rows))
            scores = ranking.restrict(self.score(part), candidates)
            if exclude_seen:
                ranking.exclude(scores, *part.seen())
            ids, values = ranking.top_k(scores, k)
            out_ids.append(ids)
            out_scores.append(values)
        if not out_ids:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate(out_ids), np.concatenate(out_scores)


class NeuralRecommender(Recommender):
    """A recommender with a torch network trained by :func:`seqrec.train.train_loop` (see the module
    docstring for what a model supplies)."""

    lr: float = option(1e-3, "learning rate", check=between(0, low_open=True), group="training",
                       search=span(1e-4, 1e-2, log=True))
    batch_size: int = option(128, "sequences per training batch", check=between(1), group="training")
    epochs: int = option(200, "maximum training epochs", check=between(1), group="training")
    patience: int = option(10, "stop after this many epochs without a validation gain", check=between(1),
                           group="training")
    time_budget: float | None = option(None, "stop after the first epoch that ends past this many seconds",
                                       check=between(0, low_open=True, none_ok=True), group="training")
    seed: int = option(0, "seed of initialisation, sampling and dropout", group="training")
    device: str = option("cpu", "cpu, cuda or cuda:N", choices=DEVICES, group="training")
    progress: bool = option(True, "show progress bars", group="training")

    # ---- what each model supplies --------------------------------------------------------------
    def _build_net(self, n_items: int) -> SequenceNet:
        raise NotImplementedError

    def _batcher(self, train: Interactions):
        """The training batches: an object with ``epoch(generator)`` and ``len()``."""
        raise NotImplementedError

    def _batch_loss(self, batch, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _optimizer(self) -> torch.optim.Optimizer:
        """Adam with the SASRec reference's betas (:data:`seqrec.optim.ADAM_BETAS`), one fused kernel."""
        return make_optimizer("adam", self.net_.parameters(), self.lr)

    # ---- fitting ---------------------------------------------------------------------------------
    def fit(self, train, valid: EvalSet | None = None, callbacks: Sequence[Callback] = ()) -> "NeuralRecommender":
        """Train on ``train`` (Interactions, DataFrame or path); early-stop on ``valid`` if given, ranked with
        the protocol it carries (see :class:`~seqrec.data.splits.EvalSet`). ``callbacks`` see every step
        and epoch (:class:`seqrec.train.Callback`)."""
        train = self._start_fit(train)
        if valid is not None and valid.log.n_items != train.n_items:
            raise DataError("the validation set was built from other data than the training set")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available; use --device cpu")
        device = distributed.start(self.device)  # joins torchrun's processes, if it started this one
        rank, size = distributed.world()
        if size > 1:
            self.device = device
        self._check_memory(train)
        generator = torch.Generator().manual_seed(self.seed)  # the batches (the same in every process)
        sampling = generator if size == 1 else torch.Generator().manual_seed(self.seed + 1_000_003 * (rank + 1))
        fork = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=fork):  # init and dropout are seeded; caller's RNG untouched
            torch.manual_seed(self.seed)
            self.net_ = self._build_net(train.n_items).to(self.device)
            if size > 1:
                torch.manual_seed(self.seed + 1_000_003 * (rank + 1))  # dropout: each process its own
            batcher = self._batcher(train)
            validate = None
            if valid is not None and len(valid):
                def validate():
                    return self._validate(valid)
            step_loss, callbacks = lambda batch: self._batch_loss(batch, sampling), list(callbacks)
            if size > 1:
                step_loss = self._data_parallel(batcher, sampling)
                callbacks.insert(0, _AgreeEpoch())
            self.train_result_ = train_loop(
                self.net_, batcher, step_loss, validate, epochs=self.epochs, patience=self.patience,
                generator=generator, progress=self.progress and rank == 0, optimizer=self._optimizer(),
                time_budget=self.time_budget, callbacks=callbacks)
        return self

    def check_data_parallel(self) -> None:
        """Raise a ConfigError if this configuration cannot train over several processes."""
        self.validate()

    def memory_plan(self, n_items: int, n_users: int = 0) -> dict:
        """The memory training this configuration on ``n_items`` items (and ``n_users`` users) needs, in
        bytes, estimated from the network's parameter count (built on the meta device: nothing allocated) and
        the largest per-step tensors: ``parameters``, ``gradients`` (dense, fp32), ``optimizer`` (its state per
        parameter), ``activations`` (an upper estimate of one step's largest working set, ``activations_what``
        says which), ``total``; and ``available`` on the training device (MemAvailable on a CPU, free memory
        on a GPU)."""
        self.validate()
        with torch.device("meta"):
            net = self._build_net_for(n_items, n_users)
        parameters = 4 * sum(p.numel() for p in net.parameters())
        activations, what = self._activation_bytes(net)
        plan = {"parameters": parameters, "gradients": parameters, "optimizer": parameters * self._optimizer_slots,
                "activations": int(activations), "activations_what": what}
        plan["total"] = sum(v for k, v in plan.items() if k != "activations_what")
        plan["available"] = available_memory(self.device)
        return plan

    def _check_memory(self, train: Interactions) -> None:
        """Log the memory plan; refuse a configuration that cannot fit, saying what to change."""
        plan = self.memory_plan(train.n_items, train.n_users)
        gib = 2.0 ** 30
        text = (f"~{plan['total'] / gib:.2f} GiB (parameters {plan['parameters'] / gib:.2f}, gradients "
                f"{plan['gradients'] / gib:.2f}, optimiser {plan['optimizer'] / gib:.2f}, largest step tensors "
                f"{plan['activations'] / gib:.2f}: {plan['activations_what']})")
        available = plan["available"]
        log.info("memory plan for %d items on %s: %s%s", train.n_items, self.device, text,
                 "" if available is None else f" of {available / gib:.1f} GiB available")
        if available is not None and plan["total"] > available:
            raise ConfigError(f"training needs {text}, more than the {available / gib:.1f} GiB available on "
                              f"{self.device}: {self._memory_advice(plan)}")

    def _memory_advice(self, plan: dict) -> str:
        return "lower --batch-size or --dim"

    @property
    def _optimizer_slots(self) -> int:
        """Optimiser state per parameter, in parameter sizes (Adam: two moments)."""
        return 2

    def _build_net_for(self, n_items: int, n_users: int) -> torch.nn.Module:
        return self._build_net(n_items)

    def _activation_bytes(self, net) -> tuple[float, str]:
        """An upper estimate of one training step's largest tensors (bytes) and what they are."""
        return 0.0, "per-batch tensors (small)"

    def _validate(self, valid: EvalSet) -> dict:
        """Validation metrics; in a distributed run each process ranks its share of the rows and the means
        are combined (the same figures in every process)."""
        rank, size = distributed.world()
        if size == 1 or len(valid) < size:
            return evaluate(self, valid, k=(10,))["metrics"]
        rows = np.arange(rank, len(valid), size)
        return distributed.combine_means(evaluate(self, valid.subset(rows), k=(10,))["metrics"], len(rows))

    def _data_parallel(self, batcher, sampling: torch.Generator):
        """The step loss of a distributed run: this process's shard of each global batch through
        DistributedDataParallel, scaled to its share of the batch (see :mod:`seqrec.distributed`)."""
        if not getattr(batcher, "shardable", True):
            raise ConfigError(f"{type(batcher).__name__} batches cannot be split over processes (their state runs "
                              "from step to step); train with --devices 1")
        rank, size = distributed.world()
        cuda = self.device.startswith("cuda")
        step = DistributedDataParallel(_Step(self.net_, lambda part: self._batch_loss(part, sampling)),
                                       device_ids=[torch.device(self.device)] if cuda else None,
                                       find_unused_parameters=False)

        def step_loss(batch):
            part = distributed.shard(batch, rank, size)
            return step(part) * distributed.position_share(part, batch)
        return step_loss

    def refit(self, train, seed: int | None = None) -> "NeuralRecommender":
        """A fresh model with these options (and ``seed`` if given), trained on ``train`` (usually
        ``split.train_valid``, the training data with the validation events added back) for exactly the epochs
        validation chose for this one (its best epoch), with no validation and no early stopping.

        This is how the BERT4Rec reference measures (its data generator trains on every item but the test
        one), and how a model is deployed after model selection. The returned model's ``refit_of_`` records
        the selection (best epoch, its validation metric, epochs run, stop reason); ``time_budget`` is not
        carried over (the epoch count is already fixed)."""
        self._check_fitted()
        selected = self.train_result_
        model = self.clone().set_params(epochs=selected.best_epoch, time_budget=None,
                                        **({} if seed is None else {"seed": seed})).fit(train)
        model.refit_of_ = {"best_epoch": selected.best_epoch, "best_valid_metric": selected.best_metric,
                           "epochs_run": len(selected.epochs) or None, "stop_reason": selected.stop_reason}
        return model

    def training_batches(self, train: Interactions):
        """The batcher ``fit`` would train with on ``train`` (for inspection and benchmarks)."""
        self.validate()
        return self._batcher(train)

    def training_flops(self, train: Interactions) -> tuple[float, float]:
        """Model FLOPs of one training epoch on ``train`` (forward + backward = 3x forward), counted on the
        epoch's real batches: (network, output layer). The output layer counts the candidates each loss
        scores (:meth:`_scored_candidates`); recomputation (the fused CE's backward) is not counted."""
        self._check_fitted()
        body = head = 0.0
        for batch in self.training_batches(train).epoch(torch.Generator().manual_seed(self.seed)):
            ids = batch.inputs if batch.inputs.dim() == 2 else batch.inputs[:, None]  # a session step: [B, 1]
            body += self.net_.flops(ids)
            head += self.net_.head_flops(batch.n_positions, self._scored_candidates(batch))
        return 3 * body, 3 * head

    def _scored_candidates(self, batch) -> int:
        """Items the loss scores at each training position of ``batch``."""
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if getattr(self, "net_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or seqrec.load() first")

    # ---- persistence (files are written and read by seqrec.rundir) -----------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """The network's weights, detached, on the CPU."""
        self._check_fitted()
        return {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}

    def restore(self, vocab, histories: Interactions, state: dict[str, torch.Tensor],
                train_result: TrainResult | None) -> "NeuralRecommender":
        """Rebuild the fitted model from saved parts (the inverse of :meth:`state`)."""
        self.validate()
        self.vocab_, self.histories_ = vocab, histories
        self.net_ = self._build_net(vocab.n_items)
        self.net_.load_state_dict(state)
        self.net_.to(self.device).eval()
        self.train_result_ = train_result
        return self


class SequentialRecommender(NeuralRecommender):
    """A neural model that reads the last ``max_len`` items of a history and trains with a registered loss."""

    LOSSES = tuple(losses.LOSSES)  # the losses this model can train with (not an option: no annotation)

    loss: str = option("ce", "training loss", choices=lambda cls: cls.LOSSES)
    max_len: int = option(50, "items of a history read (older ones are dropped)", check=between(1),
                          search=choice(20, 50, 100, 200))
    dim: int = option(64, "hidden size", check=between(1), search=choice(32, 64, 128, 256))
    n_negatives: int = option(256, "sampled negatives of the sampled losses", check=between(0),
                              search=choice(64, 256, 1024, when={"loss": losses.sampled_losses()}))

    def _activation_bytes(self, net) -> tuple[float, str]:
        """The encoder's stored activations (≈ 24 · D floats per position and layer, plus the attention
        weights where they are materialised) and the loss's working set at ``batch_size · max_len`` positions:
        the fused softmax's item chunk and hidden-state gradient, or the sampled candidates' scores (three
        [M, C] tensors: scores, softmax, gradient) and embeddings."""
        m, d = self.batch_size * self.max_len, self.dim
        layers = getattr(self, "n_blocks", 1)
        encoder = 4.0 * layers * m * (24 * d + self._attention_floats())
        kind, sampler = losses.get(self.loss).negatives, getattr(self, "sampler", "uniform")
        if kind == "catalogue":
            chunk = losses.chunk_size(m, net.n_items, self.device)
            loss, what = 4.0 * (2 * m * chunk + 2 * m * d), f"the fused softmax's [{m}, {chunk}] item chunks"
        elif kind == "one":
            loss, what = 4.0 * 6 * m, "one negative per position"
        else:
            shared = sampler in samplers.SHARED
            c = m + self.n_negatives if shared else self.n_negatives
            gathered = 0 if shared else self.batch_size * self.n_negatives * d
            loss, what = 4.0 * (3 * m * c + 2 * gathered), f"[{m}, {c}] candidate scores"
        return encoder + loss, f"encoder activations and {what}"

    def _attention_floats(self) -> int:
        """Attention floats stored per position and layer (none by default: the fused kernel)."""
        return 0

    def _memory_advice(self, plan: dict) -> str:
        advice = "lower --batch-size or --max-len"
        if losses.get(self.loss).negatives == "catalogue":
            advice = ("use a sampled loss (--loss sampled_ce or gbce with --sampler popularity/in_batch/mixed and "
                      "--n-negatives), or " + advice)
        if plan["parameters"] > plan["activations"]:
            advice += ", or a smaller --dim (the item table and its optimiser state dominate)"
        return advice

    def _scored_candidates(self, batch) -> int:
        """Items the loss scores at each training position of ``batch``."""
        kind = losses.get(self.loss).negatives
        return {"catalogue": self.net_.n_items, "one": 2}.get(kind, 1 + self.n_negatives)

    @torch.no_grad()
    def score(self, histories: Histories, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the item after the last ``max_len`` items of each history (see :meth:`Recommender.score`)."""
        self._check_fitted()
        self.net_.eval()
        x = torch.from_numpy(np.ascontiguousarray(histories.windows(self.max_len)))
        width = int((x != PAD).sum(1).max()) if len(x) else 1
        x = x[:, x.shape[1] - max(width, 1):].to(self.device)  # trim common left padding
        scores = self.net_.score(self._next_hidden(x).float(), out=out if self.device == "cpu" else None)
        return scores.float()

    def _next_hidden(self, windows: torch.Tensor) -> torch.Tensor:
        """Hidden states [R, D] that score the item after each left-padded window [R, L]."""
        return self.net_.encode(windows)[:, -1]


def available_memory(device: str) -> int | None:
    """Bytes available for training on ``device``: free GPU memory, or the kernel's MemAvailable on a CPU
    (None where it cannot be read)."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0] if torch.cuda.is_available() else None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _Step(torch.nn.Module):
    """A training step as a module, so that DistributedDataParallel sees the network's parameters and
    all-reduces their gradients; a process whose shard of a batch is empty contributes zero gradients."""

    def __init__(self, net: torch.nn.Module, loss):
        super().__init__()
        self.net, self.loss = net, loss

    def forward(self, batch) -> torch.Tensor:
        if batch.n_sequences == 0:
            return sum((p * 0.0).sum() for p in self.net.parameters())
        return self.loss(batch)


class _AgreeEpoch(Callback):
    """Make every process's epoch record the same (and so its decisions: early stopping, time budget): the
    mean loss over processes (each process's loss is its share of the global batch's), the longest times.
    Sequences per second count the global batches already."""

    def on_epoch(self, record):
        (record.loss,) = distributed.agree([record.loss], op="mean")
        record.seconds, record.valid_seconds, record.elapsed = distributed.agree(
            [record.seconds, record.valid_seconds, record.elapsed])


class TransformerRecommender(SequentialRecommender):
    """Options and precision of the self-attention models."""

    SEARCH = {"loss": choice("ce", "sampled_ce", "gbce")}

    n_blocks: int = option(2, "transformer layers", check=between(1), search=choice(1, 2, 3))
    n_heads: int = option(1, "attention heads (dim must be divisible by it)", check=between(1),
                          search=choice(1, 2, 4))
    dropout: float = option(0.2, "dropout rate", check=between(0, 1, high_open=True), search=span(0.0, 0.6))
    attn_dropout: float | None = option(None, "dropout on the attention weights (None: dropout; 0 uses the "
                                              "fused attention kernel)", check=between(0, 1, none_ok=True))
    bucketing: bool = option(False, "batch windows of similar length (faster; each batch's loss weighted by "
                                    "its share of the positions)")
    bf16: bool = option(False, "run the network and the full-softmax products in bfloat16")
    sampler: str = option("uniform", "negatives of the sampled losses: uniform or popularity-drawn per sequence, "
                                     "the batch's targets (in_batch), or those plus n_negatives uniform (mixed)",
                          choices=samplers.SAMPLERS)
    sample_alpha: float = option(1.0, "popularity sampler: items drawn ∝ training count^alpha", check=between(0))
    logq: float = option(1.0, "logQ correction of non-uniform samplers: scores minus logq · log(sampling rate)",
                         check=between(0))
    gbce_t: float = option(0.75, "gbce loss: calibration t (0: plain BCE, 1: fully calibrated)",
                           check=between(0, 1))
    weight_decay: float = option(0.0, "AdamW decay of weight matrices and embeddings (0: Adam)", check=between(0),
                                 group="training", search=choice(0.0, 0.01, 0.1, 1.0))

    def _attention_floats(self) -> int:
        """Attention weights [H, L] per query and layer, three times (scores, softmax, dropout) when attention
        dropout leaves the fused kernel."""
        dropout = self.dropout if self.attn_dropout is None else self.attn_dropout
        return 3 * self.n_heads * self.max_len if dropout > 0 else 0

    def validate(self) -> None:
        super().validate()
        if self.dim % self.n_heads:
            raise ConfigError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.sampler in ("uniform", "popularity") and not self.n_negatives \
                and losses.get(self.loss).negatives == "sampled":
            raise ConfigError(f"loss {self.loss!r} with sampler {self.sampler!r} needs n_negatives > 0")

    def _start_fit(self, train) -> Interactions:
        train = super()._start_fit(train)
        counts = torch.from_numpy(np.bincount(train.items - FIRST_ITEM, minlength=train.n_items))
        self._sampler = samplers.CandidateSampler(self.sampler, counts, self.n_negatives, self.sample_alpha)
        return train

    def _optimizer(self) -> torch.optim.Optimizer:
        """Adam, or with ``weight_decay`` AdamW decaying the weight matrices and embeddings but not biases or
        LayerNorm parameters (as BERT's ``AdamWeightDecayOptimizer``)."""
        if not self.weight_decay:
            return super()._optimizer()
        params = list(self.net_.parameters())
        groups = [{"params": [p for p in params if p.dim() == 2], "weight_decay": self.weight_decay},
                  {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=self.lr, betas=ADAM_BETAS, fused=True)

    def _position_loss(self, hidden: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
                       exclude: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """:func:`~seqrec.models.objectives.position_loss` with this model's loss, sampler and precision."""
        return position_loss(losses.get(self.loss), self.net_, hidden, mask.to(self.device),
                             targets.to(self.device), exclude, self.n_negatives, generator, self._dtype,
                             sampler=self._sampler, logq=self.logq, gbce_t=self.gbce_t)

    def _autocast(self):
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def _dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float32

    def _encode(self, inputs: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            hidden = self.net_.encode(inputs.to(self.device))
        return hidden.float()

    def _next_hidden(self, windows: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.net_.encode(windows)[:, -1]


class UserRecommender(NeuralRecommender):
    """A neural model with a parameter vector per training user (BPR-MF, NCF, FPMC, TransRec, Caser).

    A row of :class:`~seqrec.data.sequences.Histories` is a known user when it names one (``users``) that had
    training events; any other row (a new history, or a user without training events, such as a test
    session) is unknown and each model says what it does then. The users stay those of the training data:
    :meth:`set_histories` accepts only a log with the same users.
    """

    def _start_fit(self, train) -> Interactions:
        train = super()._start_fit(train)
        self.trained_users_ = torch.from_numpy(train.lengths > 0)
        return train

    def _build_net_for(self, n_items: int, n_users: int) -> torch.nn.Module:
        """The network for a log of ``n_users`` users (the nets read ``vocab_.n_users``; before ``fit`` a
        stand-in vocabulary gives it)."""
        if getattr(self, "vocab_", None) is not None:
            return self._build_net(n_items)
        if n_users < 1:
            raise ConfigError(f"{self.name} has a vector per user: its memory plan needs n_users")
        self.vocab_ = SimpleNamespace(n_users=n_users)
        try:
            return self._build_net(n_items)
        finally:
            del self.vocab_

    def _optimizer(self) -> torch.optim.Optimizer:
        """Adam with PyTorch's default betas, as the baselines' reference code."""
        return torch.optim.Adam(self.net_.parameters(), lr=self.lr, fused=True)

    def _known_users(self, histories: Histories) -> torch.Tensor:
        """[R] the training user of each row, -1 where the row's user is unknown (see the class docstring)."""
        if histories.users is None:
            return torch.full((len(histories),), -1, dtype=torch.long, device=self.device)
        users = torch.from_numpy(np.asarray(histories.users, dtype=np.int64))
        n = len(self.trained_users_)
        known = (users >= 0) & (users < n) & self.trained_users_[users.clamp(0, max(n - 1, 0))]
        return torch.where(known, users, -1).to(self.device)

    def set_histories(self, log: Interactions) -> "UserRecommender":
        if not np.array_equal(log.vocab.users, self.vocab_.users):
            raise DataError(f"{type(self).__name__} has a vector per training user: its histories must keep those "
                            "users (score new users with recommend(), from their histories)")
        return super().set_histories(log)

    def state(self) -> dict[str, torch.Tensor]:
        return {**super().state(), "trained_users": self.trained_users_.to(torch.uint8)}

    def restore(self, vocab, histories: Interactions, state: dict[str, torch.Tensor],
                train_result: TrainResult | None) -> "UserRecommender":
        state = dict(state)
        trained = state.pop("trained_users", None)
        if trained is None:
            raise DataError("weights.safetensors has no 'trained_users' tensor")
        super().restore(vocab, histories, state, train_result)
        self.trained_users_ = trained.bool()
        return self

    def _l2(self, *rows: torch.Tensor) -> torch.Tensor:
        """``reg`` times the squared norm of the parameter rows a step used, per training event (the
        per-update L2 of Rendle et al.'s SGD)."""
        return self.reg * sum(r.pow(2).sum() for r in rows) / len(rows[0])
