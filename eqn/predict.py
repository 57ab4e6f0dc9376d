"""Whole-split prediction through `trainer.predict`, reassembled by sample index on every rank.

Under DDP each rank predicts a shard (DistributedSampler pads it by repeating samples); the callback gathers
(index, scores) from all ranks and scatters them into an (n x C) tensor, so a repeated row is written twice
with the same value and no row is missing or counted twice. Rank 0 also saves the result, because with
`ddp_spawn` the calling process only sees files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils.data import DataLoader

from eqn.io import atomic_path


class GatherPredictions(Callback):
    def __init__(self, sizes: list[int], out_path: str):
        self.sizes, self.out_path = sizes, out_path
        self.result: list[torch.Tensor] | None = None

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.parts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {i: [] for i in range(len(self.sizes))}

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.parts[dataloader_idx].append((outputs["index"].cpu(), outputs["scores"].float().cpu()))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        local = {
            i: (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])) if parts else None
            for i, parts in self.parts.items()
        }
        gathered = [local]
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered = [{} for _ in range(trainer.world_size)]
            dist.all_gather_object(gathered, local)
        result = []
        for i, n in enumerate(self.sizes):
            pieces = [piece for g in gathered if (piece := g[i]) is not None]
            c = pieces[0][1].shape[1]
            full = torch.full((n, c), float("nan"))
            seen = torch.zeros(n, dtype=torch.bool)
            for index, scores in pieces:
                full[index] = scores
                seen[index] = True
            if not seen.all():
                raise RuntimeError(f"prediction is missing {int((~seen).sum())} of {n} rows")
            result.append(full)
        self.result = result
        if trainer.is_global_zero:
            with atomic_path(self.out_path, own=False) as tmp:  # scratch
                torch.save(result, tmp)


def predict_splits(
    trainer: Trainer,
    module: LightningModule,
    loaders: list[DataLoader],
    sizes: list[int],
    work_dir: str | Path | None = None,
) -> list[torch.Tensor]:
    """(n_i x C) scores for each loader; row j = sample j, whatever order, sharding or padding the run used."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        gather = GatherPredictions(sizes, str(Path(tmp) / "predictions.pt"))
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning, not declared
        trainer.callbacks = [c for c in callbacks if not isinstance(c, GatherPredictions)] + [gather]  # type: ignore[attr-defined]
        trainer.predict(module, dataloaders=loaders if len(loaders) > 1 else loaders[0], return_predictions=False)
        if gather.result is not None:
            return gather.result
        return torch.load(gather.out_path, weights_only=True)  # ddp_spawn: computed in the worker processes


def predict_scores(trainer: Trainer, module: LightningModule, loader: DataLoader, n: int) -> torch.Tensor:
    return predict_splits(trainer, module, [loader], [n])[0]
