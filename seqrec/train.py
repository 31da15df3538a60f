"""The training loop shared by every neural model: epochs, early stopping, best weights, time budget,
progress, callbacks.

A model supplies a batcher (``epoch(generator)`` yielding batches with ``n_sequences``, and ``len()``),
``step_loss(batch) -> scalar tensor``, an optimiser and an optional ``validate() -> dict`` of metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    seconds: float  # training time of this epoch (without validation)
    sequences_per_s: float
    valid_seconds: float = 0.0
    elapsed: float = 0.0  # wall time since training started, validation included
    valid: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    epochs: list[EpochRecord]
    best_epoch: int
    best_metric: float | None
    stop_reason: str = "epochs"  # "epochs" (ran them all), "patience" (early stop), "time_budget", "callback"

    def to_dict(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_metric": self.best_metric, "stop_reason": self.stop_reason,
                "epochs": [asdict(r) for r in self.epochs]}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainResult":
        return cls([EpochRecord(**r) for r in data.get("epochs", [])], data["best_epoch"], data["best_metric"],
                   data.get("stop_reason", "epochs"))


class Callback:
    """Hooks into :func:`train_loop`; each returns None, or True to stop training (after that step's
    optimiser update, or after that epoch). Phases of a step: ``on_batch`` (the batch is ready),
    ``on_loss`` (forward and loss done), ``on_backward``, ``on_step`` (optimiser step done)."""

    def on_batch(self, batch) -> bool | None: ...
    def on_loss(self, loss: torch.Tensor) -> bool | None: ...
    def on_backward(self) -> bool | None: ...
    def on_step(self, step: int) -> bool | None: ...
    def on_epoch(self, record: EpochRecord) -> bool | None: ...


def train_loop(net: torch.nn.Module, batcher, step_loss: Callable[[object], torch.Tensor],
               validate: Callable[[], dict] | None, *, epochs: int, patience: int, generator: torch.Generator,
               optimizer: torch.optim.Optimizer, metric: str = "NDCG@10", progress: bool = True,
               time_budget: float | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train with ``optimizer``; after each epoch validate, keep the best weights, stop after ``patience``
    epochs without improvement of ``metric``; the network ends holding the best weights.

    ``time_budget`` (seconds of wall time, validation included) stops training after the first epoch that
    ends past it; an epoch is never cut short, so the run can overshoot by up to one epoch.
    """
    history: list[EpochRecord] = []
    best_metric, best_epoch, best_state, stop_reason = None, 0, None, "epochs"
    n_batches = len(batcher)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        net.train()
        tick, total_loss, n_seen, n_steps, stop = time.perf_counter(), 0.0, 0, 0, False
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not progress)
        for batch in batcher.epoch(generator):
            stop = any([c.on_batch(batch) for c in callbacks])
            loss = step_loss(batch)
            stop = any([c.on_loss(loss) for c in callbacks]) or stop
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stop = any([c.on_backward() for c in callbacks]) or stop
            optimizer.step()
            total_loss += loss.item()
            n_seen += batch.n_sequences
            n_steps += 1
            stop = any([c.on_step(n_steps) for c in callbacks]) or stop
            bar.update(1)
            if n_steps % 10 == 0 or n_steps == n_batches:
                bar.set_postfix(loss=f"{total_loss / n_steps:.4f}",
                                seq_s=f"{n_seen / (time.perf_counter() - tick):.0f}")
            if stop:
                break
        bar.close()
        seconds = time.perf_counter() - tick
        record = EpochRecord(epoch, total_loss / max(n_steps, 1), seconds, n_seen / max(seconds, 1e-9))
        if validate is not None and not stop:
            tick = time.perf_counter()
            net.eval()
            record.valid = validate()
            record.valid_seconds = time.perf_counter() - tick
        record.elapsed = time.perf_counter() - start
        history.append(record)
        stop = any([c.on_epoch(record) for c in callbacks]) or stop
        value = record.valid.get(metric) if record.valid else None
        log.info("epoch %d: loss %.4f, %.1f s, %.0f seq/s%s", epoch, record.loss, seconds,
                 record.sequences_per_s, f", valid {metric} {value:.4f}" if value is not None else "")
        if value is None:
            best_epoch = epoch
        elif best_metric is None or value > best_metric:
            best_metric, best_epoch = value, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= patience:
            log.info("early stop: no %s gain for %d epochs; best epoch %d (%.4f)", metric, patience,
                     best_epoch, best_metric)
            stop_reason = "patience"
            break
        if stop:
            stop_reason = "callback"
            break
        if time_budget is not None and record.elapsed >= time_budget and epoch < epochs:
            log.info("time budget of %.0f s spent after epoch %d (%.0f s); best epoch %d", time_budget, epoch,
                     record.elapsed, best_epoch)
            stop_reason = "time_budget"
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return TrainResult(history, best_epoch, best_metric, stop_reason)
