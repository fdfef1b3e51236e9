"""The one markdown table writer (GitHub-flavoured, no tabulate needed)."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import pandas as pd


def markdown_table(df: pd.DataFrame, path: Optional[str] = None, floatfmt: str = ".4g", index: bool = False) -> str:
    """A markdown table of ``df`` (numeric columns right-aligned, NaN as empty); written to ``path`` if given."""
    frame = df.reset_index() if index else df

    def fmt(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else format(float(v), floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = [str(c).replace("\n", " ") for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    text = "\n".join(lines) + "\n"
    if path is not None:
        from .rundir import write_text

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_text(path, text)
    return text
