"""The intensity table format shared by relabeled_train.csv and annotation outputs."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from eqn.io import atomic_path


def intensity_frame(columns: dict, intensities: torch.Tensor, label_names: list[str]) -> pd.DataFrame:
    """Given columns first, then one column per label: intensities rounded to 2 decimals."""
    frame = pd.DataFrame(columns)
    values = intensities.detach().cpu().double().numpy().round(2)
    return pd.concat([frame, pd.DataFrame(values, columns=list(label_names), index=frame.index)], axis=1)


def write_intensity_csv(path: Path, columns: dict, intensities: torch.Tensor, label_names: list[str]) -> None:
    frame = intensity_frame(columns, intensities, label_names)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.2f")
