"""Average rank of methods over tasks (the paper's Table 4 "Avg. rank" column)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

TIE_METHODS = ("min", "average", "dense", "max", "first")


def _directions(table: pd.DataFrame, higher_is_better: bool | Mapping[str, bool]) -> dict[str, bool]:
    """Per column: True when a higher value ranks better."""
    if isinstance(higher_is_better, bool):
        return {column: higher_is_better for column in table.columns}
    if not isinstance(higher_is_better, Mapping):
        raise TypeError(f"higher_is_better must be a bool or a mapping column -> bool, got "
                        f"{type(higher_is_better).__name__}")
    missing = [column for column in table.columns if column not in higher_is_better]
    if missing:
        raise ValueError(f"higher_is_better has no direction for columns {missing}; give one bool per column "
                         f"(columns: {list(table.columns)})")
    return {column: bool(higher_is_better[column]) for column in table.columns}


def average_rank(table: pd.DataFrame, higher_is_better: bool | Mapping[str, bool] = True,
                 method: str = "min") -> pd.Series:
    """Mean rank of every row (method) over the columns (tasks); rank 1 is the best.

    Ties share the lowest rank of their group (``method="min"``: 1, 2, 2, 4), which is what reproduces the paper's
    Table 4; pandas' other tie rules can be chosen with `method`. Missing cells (NaN) are not ranked: each column
    ranks only the rows that have a value there, and each row's average is over the columns where it has a value
    (a row without any value gets NaN).
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"table must be a pandas DataFrame (rows = methods, columns = tasks), got "
                        f"{type(table).__name__}")
    if method not in TIE_METHODS:
        raise ValueError(f"method {method!r} is not a tie rule; choose one of {', '.join(TIE_METHODS)}")
    if table.columns.has_duplicates:
        raise ValueError(f"average_rank: duplicate column names {list(table.columns[table.columns.duplicated()])}; "
                         "give every task its own column")
    non_numeric = [column for column in table.columns if not pd.api.types.is_numeric_dtype(table[column])]
    if non_numeric:
        raise ValueError(f"average_rank needs numeric columns; {non_numeric} are not (convert them, or drop them)")
    directions = _directions(table, higher_is_better)
    ranks = pd.DataFrame({column: table[column].rank(ascending=not directions[column], method=method,
                                                     na_option="keep")
                          for column in table.columns}, index=table.index)
    return ranks.mean(axis=1, skipna=True).rename("avg_rank")
