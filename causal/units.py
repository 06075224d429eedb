"""Reading and checking the units table of a geolocated RCT (one row per household / village).

A real analysis starts from a CSV with a unit id, coordinates, the treatment arm, the outcome and
optionally a cluster (village) id; see ``data_cards/peru_graduation_rct.md``. Every problem is
reported as a :class:`geovit.errors.DataError` naming the file, the column and the offending units.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from geovit.errors import DataError

_TRUE = {"1", "1.0", "true", "t", "yes", "y", "treatment", "treated"}
_FALSE = {"0", "0.0", "false", "f", "no", "n", "control"}


def _name_units(ids: pd.Series, mask: np.ndarray, k: int = 10) -> str:
    bad = ids[mask].astype(str).tolist()
    return ", ".join(bad[:k]) + (f" … ({len(bad)} in all)" if len(bad) > k else "")


def binary_treatment(values: pd.Series, ids: pd.Series, *, column: str, where: str,
                     treated_value: str | None = None) -> np.ndarray:
    """0/1 treatment from 0/1 numbers, booleans, or labels (Treatment/Control, yes/no, ...).

    With ``treated_value`` the arm is ``values == treated_value`` (any other label is control).
    """
    missing = values.isna().to_numpy()
    if missing.any():
        raise DataError(f"{where}: column {column!r} is missing for unit(s) {_name_units(ids, missing)}")
    if treated_value is not None:
        w = (values.astype(str).str.strip() == str(treated_value)).to_numpy()
        if not w.any():
            raise DataError(f"{where}: no unit has {column} == {treated_value!r}; values are "
                            f"{sorted(values.astype(str).unique())[:10]}")
        return w.astype(np.int64)
    text = values.astype(str).str.strip().str.lower()
    ok = text.isin(_TRUE | _FALSE).to_numpy()
    if not ok.all():
        raise DataError(f"{where}: column {column!r} must be a binary treatment (0/1, true/false or "
                        f"Treatment/Control); unit(s) {_name_units(ids, ~ok)} have "
                        f"{sorted(values[~ok].astype(str).unique())[:5]} (use --treated-value to name the treated arm)")
    w = text.isin(_TRUE).to_numpy().astype(np.int64)
    if w.min() == w.max():
        raise DataError(f"{where}: column {column!r} has a single arm ({'treated' if w[0] else 'control'}); "
                        "need treated and control units")
    return w


def read_units_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a units CSV, raising :class:`DataError` naming the file when it is missing, a folder,
    empty, binary or malformed (a header-only file reads as a table without rows)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"units file {path}: is a folder; expected a CSV file with one row per unit")
    if not path.is_file():
        raise DataError(f"units file {path}: not found")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        # EmptyDataError (a 0-byte file) is a ValueError too
        raise DataError(f"units file {path}: not a readable CSV ({err})") from None


def read_rct_units(
    units: str | os.PathLike | pd.DataFrame,
    *,
    id_col: str = "unit_id",
    treatment_col: str = "treatment",
    outcome_col: str = "outcome",
    cluster_col: str | None = None,
    coord_cols: tuple[str, str] = ("lon", "lat"),
    treated_value: str | None = None,
) -> pd.DataFrame:
    """The checked units table: the original columns plus ``W`` (0/1) and ``Y`` (float).

    Raises :class:`DataError` for a missing, empty or header-only file, a missing column, duplicated
    ids, a treatment that is not binary, non-numeric or missing outcomes, missing cluster ids or
    fewer than 2 clusters -- naming the file, the column and the units.
    """
    if isinstance(units, pd.DataFrame):
        df, where = units.copy(), "units table"
    else:
        df, where = read_units_csv(units), f"units file {Path(units)}"
    if len(df) == 0:
        raise DataError(f"{where}: has a header but no rows; expected one row per unit "
                        f"(columns {list(df.columns)})")
    need = [id_col, treatment_col, outcome_col, *coord_cols] + ([cluster_col] if cluster_col else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; it has {list(df.columns)} "
                        "(name them with --id-col/--treatment-col/--outcome-col/--lon-col/--lat-col/--x-col/--y-col)")
    ids = df[id_col].astype(str)
    if ids.duplicated().any():
        raise DataError(f"{where}: column {id_col!r} has duplicated ids {ids[ids.duplicated()].unique()[:10].tolist()}")
    df["W"] = binary_treatment(df[treatment_col], ids, column=treatment_col, where=where, treated_value=treated_value)
    y = pd.to_numeric(df[outcome_col], errors="coerce")
    bad = y.isna().to_numpy() | ~np.isfinite(y.to_numpy(float, na_value=np.nan))
    if bad.any():
        raise DataError(f"{where}: column {outcome_col!r} is missing or not a number for unit(s) "
                        f"{_name_units(ids, bad)}; drop or impute them first")
    df["Y"] = y.to_numpy(float)
    if cluster_col:
        cmiss = df[cluster_col].isna().to_numpy()
        if cmiss.any():
            raise DataError(f"{where}: column {cluster_col!r} (clusters) is missing for unit(s) {_name_units(ids, cmiss)}")
        if df[cluster_col].nunique() < 2:
            raise DataError(f"{where}: column {cluster_col!r} has fewer than 2 clusters; the cluster bootstrap needs ≥ 2")
    return df
