"""precision=fast: score with the fastest path available, then score again in fp32 every row whose decision that path
could have got wrong, so that the `emotions` column equals fp32's.

- Candidates (transformer encoders): ONNX Runtime in fp32 with all its graph optimisations (errors near 1e-6, so
  its margins hand back almost no rows) and with int8 weights (per channel; both `pip install eqn[fast]`), PyTorch's
  dynamic int8, bf16 autocast. Word backbones (ANN, CNN, LSTM, TextCNN) are fast in fp32 already: for them
  `fast` is fp32.
- Calibration, once per model: the first texts annotated (up to 512) are scored in fp32 and with every candidate.
  A candidate's margins, one per label, are 2 x its largest absolute error on that label's scores there (a factor-2
  safety on the measured bound; per label because errors differ by label: bf16's ran from 0.008 to 0.065); its
  cost is its own time plus the fp32 time of the calibration rows its margins would hand back. The cheapest wins —
  fp32 itself when no candidate beats it, so `fast` is never slower than fp32 by more than the calibration. The
  choice and margin are stored in the cache (`$EQN_CACHE_DIR`, else ~/.cache/eqn, `fast/<model digest>/choice.json`,
  with the exported ONNX model).
- A row is rescored in fp32 when any label's fast score lies within its margin of its threshold, another label lies
  within the two labels' margins of the top one, or two chosen labels (whose order is printed) lie within their two
  margins of each other. Rescored rows carry their fp32 scores; the other rows keep the fast path's scores (each
  label's intensity differs from fp32's by less than its margin; their decisions are the same).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from eqn.data.datamodule import length_sorted_scores

log = logging.getLogger(__name__)
CALIBRATION_TEXTS = 512


def cache_root() -> Path:
    return Path(os.environ.get("EQN_CACHE_DIR") or Path.home() / ".cache" / "eqn") / "fast"


def model_digest(module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def is_transformer(module) -> bool:
    return type(module.backbone).__name__ == "Bert"


class _Logits(torch.nn.Module):
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, ids, mask):
        return self.module(ids, mask)


class OrtEngine:
    """ONNX Runtime session (all graph optimisations) over the model exported in fp32, or with int8 weights;
    returns logits like the module."""

    def __init__(self, module, folder: Path, int8: bool = True):
        import onnxruntime as ort

        path = folder / ("model.int8.onnx" if int8 else "model.fp32.onnx")
        if not path.exists():
            export_onnx(module, folder, int8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})[0]
        return torch.from_numpy(out)


def export_onnx(module, folder: Path, int8: bool) -> None:
    """The module as ONNX (dynamic batch and length) in fp32, then (int8) its weights quantised per channel."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)  # as pad_batch makes it
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        torch.onnx.export(
            _Logits(module).eval(),
            (ids, mask),
            str(fp32),
            input_names=["ids", "mask"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}},
        )
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(fp32), str(Path(tmp) / "model.int8.onnx"), weight_type=QuantType.QInt8, per_channel=True
            )
            os.replace(Path(tmp) / "model.int8.onnx", folder / "model.int8.onnx")
        else:
            os.replace(fp32, folder / "model.fp32.onnx")


def torch_int8(module):
    import copy

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


class Bf16Engine:
    def __init__(self, module):
        self.module = module

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.module(ids, mask).float()


class FastScorer:
    """Picks, per model, the engine that annotates fastest *including* the fp32 rescoring its error forces, and keeps
    its margin; both are measured once (calibration) and stored in the cache."""

    CANDIDATES = ("onnxruntime-fp32", "onnxruntime-int8", "torch-int8", "bf16")

    def __init__(self, module):
        self.module = module
        self.folder = cache_root() / model_digest(module)
        self.engine, self.name, self.margin = None, "fp32", torch.tensor(0.0)
        self.calibrated = not is_transformer(module)  # word backbones: fp32 is the fast path
        stored = self._stored()
        if stored and not self.calibrated:
            self._use(stored["engine"], stored["margin"])
            self.calibrated = self.engine is not None or stored["engine"] == "fp32"
        self.rows = self.rescored = 0
        self.report: dict = stored or {}

    def _stored(self) -> dict | None:
        """The cached choice, if it is one this model can use: a known engine and one finite, non-negative margin
        per label (a malformed or foreign file is ignored, and calibration writes a good one over it)."""
        import math

        try:
            stored = json.loads((self.folder / "choice.json").read_text())
        except (OSError, ValueError):
            return None
        labels = len(self.module.hparams.label_names)
        margin = stored.get("margin") if isinstance(stored, dict) else None
        margins = margin if isinstance(margin, list) else [margin]
        ok = (stored.get("engine") in (*self.CANDIDATES, "fp32") if isinstance(stored, dict) else False) and (
            len(margins) in (1, labels)
            and all(
                isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m >= 0 for m in margins
            )
        )
        if not ok:
            log.warning(
                "precision=fast: %s is not a valid choice for this model; calibrating again",
                self.folder / "choice.json",
            )
            return None
        return stored

    def build(self, name: str):
        if name in ("onnxruntime-int8", "onnxruntime-fp32"):
            try:
                return OrtEngine(self.module, self.folder, int8=name.endswith("int8"))
            except ImportError:
                log.info("precision=fast: onnxruntime/onnx not installed (pip install eqn[fast])")
                return None
        if name == "torch-int8":
            return torch_int8(self.module)
        if name == "bf16":
            return Bf16Engine(self.module)
        return None

    def _use(self, name: str, margin) -> None:
        """`margin`: one per label (a list or tensor), or one for all labels."""
        self.engine = self.build(name) if name != "fp32" else None
        self.name, self.margin = (
            (name, torch.as_tensor(margin, dtype=torch.float32))
            if self.engine is not None
            else ("fp32", torch.tensor(0.0))
        )

    def calibrate(self, ids, lengths, batch_size: int, exact, thresholds, multi_label: bool) -> None:
        """Score the calibration texts in fp32 and with every candidate; keep the engine whose time plus the fp32
        time of the rows it would hand back is least (fp32 itself when none wins). margin = 2 x max |error|."""
        import time

        from eqn.io import write_json

        started = time.perf_counter()
        truth = exact(ids, lengths, batch_size)
        fp32_s = time.perf_counter() - started
        best, trials = ("fp32", 0.0, fp32_s), {}
        for name in self.CANDIDATES:
            engine = self.build(name)
            if engine is None:
                continue
            started = time.perf_counter()
            fast = self._scores(engine, ids, lengths, batch_size)
            seconds = time.perf_counter() - started
            margin = (2.0 * (fast - truth).abs().amax(0)).clamp(min=1e-6)  # per label
            share = float(self.uncertain(fast, thresholds, multi_label, margin).float().mean())
            cost = seconds + share * fp32_s
            trials[name] = {"seconds": seconds, "margin": margin.tolist(), "rescored_share": share, "cost_s": cost}
            if cost < best[2]:
                best = (name, margin, cost)
        self._use(best[0], best[1])
        self.calibrated = True
        self.report = {
            "engine": self.name,
            "margin": self.margin.tolist(),
            "texts": len(lengths),
            "fp32_s": fp32_s,
            "candidates": trials,
        }
        write_json(self.folder / "choice.json", self.report, own=False)
        log.info(
            "precision=fast: %s (largest margin %.4f) chosen on %d texts",
            self.name,
            float(self.margin.max()),
            len(lengths),
        )

    def _scores(self, engine, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
        return length_sorted_scores(
            lambda batch, mask: self.module.scores(engine(batch, mask).float()).cpu(),
            ids,
            lengths,
            batch_size,
            len(self.module.hparams.label_names),
        )

    def engine_scores(self, ids: torch.Tensor, lengths: torch.Tensor, batch_size: int) -> torch.Tensor:
        return self._scores(self.engine, ids, lengths, batch_size)

    def uncertain(
        self,
        scores: torch.Tensor,
        thresholds: torch.Tensor,
        multi_label: bool,
        margin: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Rows whose decisions (labels chosen, top label, printed order) could differ when every label's score may be
        off by up to its margin (one per label, or one for all)."""
        m = torch.as_tensor(self.margin if margin is None else margin, dtype=scores.dtype).expand(scores.shape[1])
        top = scores.argmax(1, keepdim=True)
        others = torch.ones_like(scores, dtype=torch.bool).scatter(1, top, False)
        # another label could overtake the top one
        close = ((scores.gather(1, top) - scores <= m[top] + m) & others).any(1)
        if not multi_label:
            return close
        near = ((scores - thresholds).abs() <= m).any(1)  # a label could cross its threshold
        chosen = scores >= thresholds
        pairs = chosen.unsqueeze(2) & chosen.unsqueeze(1) & ~torch.eye(scores.shape[1], dtype=torch.bool)
        swap = (scores.unsqueeze(2) - scores.unsqueeze(1)).abs() <= m.view(-1, 1) + m.view(1, -1)
        crowded = (pairs & swap).flatten(1).any(1)  # two chosen labels could change their printed order
        return close | near | crowded
