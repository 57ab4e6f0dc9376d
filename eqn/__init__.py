"""eqn: micro-emotion intensity detection with the Expansion Quantization Network (EQN).

targets.py (init, regress) -> pipeline.py (fit CoEQN -> regress -> fit EQN) -> inference.py (scores for new text).
"""

__version__ = "0.1.0"


def load(checkpoint: str | None = None, device: str = "cpu", precision: str = "fp32", long_texts: str = "truncate"):
    """A model for annotation: `load(x).annotate([...])`, x a run checkpoint, an exported folder or a hub id; with
    no argument, eqn's built-in annotator (eqn/builtin.py).
    long_texts: "truncate" (a text longer than the model's max length is cut) or "windows" (overlapping windows,
    each label's intensity the maximum over them). Loading never runs code from the file."""
    from eqn.inference import Annotator

    return Annotator.from_checkpoint(checkpoint, device=device, precision=precision, long_texts=long_texts)
