"""eqn: micro-emotion intensity detection with the Expansion Quantization Network (EQN).

targets.py (init, regress) -> pipeline.py (fit CoEQN -> regress -> fit EQN) -> annotate.py (scores for new text).
"""

__version__ = "0.1.0"


def load(checkpoint: str, device: str = "cpu"):
    """A model for annotation: `load(x).annotate([...])`, x a run checkpoint, an exported folder or a hub id.
    Loading never runs code from the file."""
    from eqn.annotate import Annotator

    return Annotator.from_checkpoint(checkpoint, device=device)
