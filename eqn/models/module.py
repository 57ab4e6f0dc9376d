"""One LightningModule for every backbone: backbone -> dropout -> linear head -> objective.

objective 'eqn': no output activation, MSE against the 0..scale intensity targets (CoEQN and EQN stages);
'bce': multi-label classifier baseline; 'ce': single-label classifier baseline; 'soft_bce' / 'soft_ce': the same
classifiers trained on graded targets (intensity / scale: soft multi-label or soft single-label distillation).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.parsing import AttributeDict
from omegaconf import DictConfig, OmegaConf
from torch import nn

from eqn import evaluation
from eqn.config import as_dict
from eqn.errors import DataError
from eqn.models.backbones import Bert, build_backbone

OBJECTIVES = ("eqn", "bce", "ce", "soft_bce", "soft_ce")
CLASSIFIER = {"bce": "bce", "ce": "ce", "soft_bce": "bce", "soft_ce": "ce"}  # objective -> output activation


class EQNModule(LightningModule):
    thresholds: torch.Tensor  # per-label decision thresholds on the score scale (a buffer: saved with the weights)
    builtin: dict | None = None  # the built-in annotator's spec (annotator.json) when it was loaded from eqn/builtin

    def __init__(
        self,
        backbone: dict,
        label_names: list[str],
        multi_label: bool,
        objective: str = "eqn",
        scale: float = 10.0,
        head_dropout: float = 0.1,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        encoder: str | None = None,
        thresholds: list[float] | None = None,
        stage: str = "eqn",
        max_length: int = 128,
        threshold: float | None = None,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
        if objective in ("ce", "soft_ce") and multi_label:
            raise ValueError(
                f"objective {objective!r} is single-label; use 'bce' or 'soft_bce' for a multi-label dataset"
            )
        self.backbone = build_backbone(backbone)
        if hasattr(self.backbone, "hf_config"):  # let load_from_checkpoint rebuild the encoder offline
            backbone = {**backbone, "hf_config": self.backbone.hf_config}
        self.save_hyperparameters(
            {
                "backbone": backbone,
                "label_names": list(label_names),
                "multi_label": multi_label,
                "objective": objective,
                "scale": scale,
                "head_dropout": head_dropout,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "encoder": encoder,
                "stage": stage,
                "max_length": max_length,
                "threshold": threshold,
            }
        )
        c = len(label_names)
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(self.backbone.output_dim, c))
        init = torch.tensor(thresholds, dtype=torch.float32) if thresholds else torch.full((c,), 0.5 * self.score_scale)
        self.register_buffer("thresholds", init)
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyper-parameters (Lightning's AttributeDict: read as attributes)."""
        return cast(AttributeDict, super().hparams)

    # ------------------------------------------------------------------ scores
    @property
    def score_scale(self) -> float:
        """Scores live in [0, scale] for EQN, [0, 1] for the classifiers."""
        return 1.0 if self.hparams.objective in CLASSIFIER else self.hparams.scale

    @torch.no_grad()
    def init_head_bias(self, label_prior: list[float] | tuple[float, ...]) -> None:
        """Start every objective at its best constant prediction (the label priors), so no objective spends its
        budget learning the priors: BCE logit(p), CE log p, EQN (MSE) the mean target scale * p."""
        p = torch.tensor(label_prior, dtype=torch.float32).clamp(1e-4, 1 - 1e-4)
        bias = {"bce": torch.log(p / (1 - p)), "ce": torch.log(p / p.sum()), "eqn": p * self.hparams.scale}
        cast(nn.Linear, self.head[-1]).bias.copy_(bias[CLASSIFIER.get(self.hparams.objective, "eqn")])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(input_ids, attention_mask))

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        kind = CLASSIFIER.get(self.hparams.objective)
        if kind == "bce":
            return torch.sigmoid(outputs)
        if kind == "ce":
            return torch.softmax(outputs, dim=-1)
        return outputs

    def loss(self, outputs: torch.Tensor, batch: dict) -> torch.Tensor:
        objective = self.hparams.objective
        if objective == "eqn":
            return nn.functional.mse_loss(outputs.float(), batch["targets"].float())
        if objective == "bce":
            return nn.functional.binary_cross_entropy_with_logits(outputs.float(), batch["gold"].float())
        if objective == "soft_bce":  # graded targets as probabilities
            return nn.functional.binary_cross_entropy_with_logits(
                outputs.float(), batch["targets"].float() / self.hparams.scale
            )
        if objective == "soft_ce":  # graded targets as a distribution over the labels
            targets = batch["targets"].float()
            return nn.functional.cross_entropy(outputs.float(), targets / targets.sum(1, keepdim=True).clamp_min(1e-8))
        return nn.functional.cross_entropy(outputs.float(), batch["gold"].float().argmax(1))

    @torch.no_grad()
    def fit_thresholds(self, scores: torch.Tensor, gold: torch.Tensor) -> None:
        """Multi-label thresholds from validation scores: tuned per label, or the fixed `threshold` (0..scale)."""
        if not self.hparams.multi_label:
            return
        if self.hparams.threshold is not None:
            self.thresholds.fill_(self.hparams.threshold / self.hparams.scale * self.score_scale)
        else:
            self.thresholds.copy_(evaluation.tune_thresholds(scores, gold))

    # ------------------------------------------------------------------ steps
    def intensities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs on the 0..scale target scale (what progressive label regression feeds back into the targets)."""
        return self.scores(outputs.float()) * (self.hparams.scale / self.score_scale)

    def training_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        outputs = self(batch["input_ids"], batch["attention_mask"])
        loss = self.loss(outputs, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"stage '{self.hparams.stage}': training loss became {loss.item()} at step "
                f"{self.global_step}; lower the learning rate or check the data"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        return {"loss": loss, "intensities": self.intensities(outputs.detach())}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        outputs = self(batch["input_ids"], batch["attention_mask"])
        self.log("val/loss", self.loss(outputs, batch), prog_bar=True, batch_size=len(batch["index"]), sync_dist=True)
        self._val.append((batch["index"], self.scores(outputs.float()), batch["gold"]))

    def on_validation_epoch_end(self) -> None:
        """Thresholds tuned on the whole validation split, then `val/f1_macro` under them (the headline rule)."""
        if not self._val:
            return
        index, scores, gold = (torch.cat(parts) for parts in zip(*self._val))
        self._val.clear()
        if self.trainer.world_size > 1:  # every rank sees the whole split (rows repeated by padding collapse)
            index, scores, gold = (
                cast(torch.Tensor, self.all_gather(t)).flatten(0, 1) for t in (index, scores, gold.to(torch.uint8))
            )
            keep = torch.zeros(int(index.max()) + 1, dtype=torch.long, device=index.device)
            keep[index] = torch.arange(len(index), device=index.device)
            scores, gold = scores[keep], gold[keep]
        scores, gold = scores.float().cpu(), gold.bool().cpu()
        self.fit_thresholds(scores, gold)
        pred = evaluation.decide(scores, self.hparams.multi_label, self.thresholds.cpu())
        f1 = evaluation.classification_metrics(pred, gold, self.hparams.multi_label, [])["f1_macro"]
        self.log("val/f1_macro", f1, prog_bar=True)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        outputs = self(batch["input_ids"], batch["attention_mask"])
        return {"index": batch["index"], "scores": self.scores(outputs.float())}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        from transformers import get_scheduler

        options = dict(self.hparams.optimizer or {"_target_": "torch.optim.AdamW", "lr": 1e-3})
        target = options.pop("_target_", "torch.optim.AdamW")
        module, _, name = target.rpartition(".")
        cls = getattr(torch.optim, name, None) if module == "torch.optim" else None
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            raise ValueError(
                f"model.optimizer._target_={target!r}: use a torch.optim optimizer, e.g. torch.optim.AdamW"
            )
        optimizer = cls(self.parameters(), **options)
        sched = dict(self.hparams.scheduler or {"name": "linear"})
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_scheduler(
            sched.get("name", "linear"),
            optimizer,
            num_warmup_steps=math.ceil(sched.get("warmup_ratio", 0.0) * total),
            num_training_steps=total,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def plain(value: Any) -> Any:
    """Hyper-parameters as plain Python containers (no OmegaConf types), loadable with weights_only=True."""
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def build_module(spec, cfg: DictConfig, objective: str, stage: str) -> EQNModule:
    """The one way to build a module: the data's spec + the model/pipeline config."""
    backbone = as_dict(cfg.model.backbone)
    if spec.encoder_kind == "word":
        backbone.update(vocab_size=spec.vocab_size, pad_id=spec.pad_id)
    module = EQNModule(
        backbone=backbone,
        label_names=list(spec.label_names),
        multi_label=spec.multi_label,
        objective=objective,
        scale=cfg.pipeline.scale,
        head_dropout=cfg.model.head_dropout,
        optimizer=as_dict(cfg.model.optimizer),
        scheduler=as_dict(cfg.model.scheduler),
        encoder=spec.encoder,
        stage=stage,
        max_length=spec.max_length,
        threshold=cfg.pipeline.threshold,
    )
    if cfg.model.head_init == "prior":
        module.init_head_bias(spec.label_prior)
    if cfg.model.embedding_init and spec.encoder_kind == "word":
        from eqn.data.tokenize import TextEncoder
        from eqn.models.backbones import init_word_embeddings

        vocab = TextEncoder.from_str(spec.encoder).tokenizer.get_vocab()
        init_word_embeddings(cast(nn.Embedding, module.backbone.embedding), vocab, cfg.model.embedding_init)
    return module


@torch.no_grad()
def merge_lora(module: EQNModule) -> EQNModule:
    """An EQNModule whose encoder carries a LoRA delta, made plain: the delta merged into the weights (and a pooler
    trained beside it put in place), so it computes the same as a fully fine-tuned model with no LoRA at runtime."""
    backbone = module.backbone
    if isinstance(backbone, Bert) and hasattr(backbone.encoder, "merge_and_unload"):
        backbone.encoder = backbone.encoder.merge_and_unload()
        module.hparams.backbone = {**module.hparams.backbone, "lora": None}
    return module


def load_module(path: str | Path, map_location: str = "cpu") -> EQNModule:
    """An EQNModule from a checkpoint that may come from anyone: tensors and plain containers only
    (weights_only=True), the backbone from eqn's allow-list. Anything else is one DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path,
            "is a link that leads nowhere (a loop or a missing target)"
            if path.is_symlink() and not path.exists()
            else "checkpoint not found"
            if not path.exists()
            else "is not a checkpoint file",
        )
    import zipfile

    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror or err})") from None
    try:
        if not zipfile.is_zipfile(path):  # every checkpoint torch.save has written since 1.6 is a zip archive
            raise DataError(path, "not a PyTorch checkpoint (truncated or corrupt file)")
        # the classmethod itself: Lightning's wrapper first walks inspect.stack() (to spot TorchScript), which reads
        # every frame's source and scans sys.modules per frame — 0.05-0.3 s per load inside a sweep or a test run
        load = getattr(EQNModule.load_from_checkpoint, "__func__", None)
        if load is None:
            return EQNModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
        return load(EQNModule, path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror or err})") from None
    except DataError:
        raise
    except Exception as err:  # unpickling refusals, truncated zips, foreign or tampered contents
        raise DataError(path, checkpoint_problem(err)) from None


def checkpoint_problem(err: Exception) -> str:
    """Why a checkpoint was refused, in eqn's words (never PyTorch's advice to load it unsafely)."""
    text = " ".join(str(err).split())
    if "not one of eqn's backbones" in text or "torch.optim" in text:
        return f"not a trusted eqn checkpoint: {text[:300]}"
    if "WeightsUnpickler error" in text or "weights_only" in text.lower():
        detail = (
            text.split("WeightsUnpickler error:", 1)[-1].split(". ")[0].strip() if "WeightsUnpickler" in text else ""
        )
        return "not a trusted eqn checkpoint: it holds Python objects that eqn never loads" + (
            f" ({detail[:160]})" if detail else ""
        )
    if "PytorchStreamReader" in text or "zip archive" in text or "invalid load key" in text or "EOF" in text:
        return "not a PyTorch checkpoint (truncated or corrupt file)"
    if isinstance(err, KeyError):
        return f"not an eqn checkpoint (it lacks {text[:80]})"
    return f"not a usable eqn checkpoint: {text[:200] or type(err).__name__}"
