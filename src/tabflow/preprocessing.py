"""Build the ColumnTransformer that turns raw columns into model inputs."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from tabflow.config import Encoder, NumericImputer, Scaler

_SCALERS: dict[Scaler, Any] = {
    Scaler.standard: StandardScaler,
    Scaler.minmax: MinMaxScaler,
    Scaler.robust: RobustScaler,
}


def make_preprocessor(
    cfg: DictConfig, numeric: list[str], categorical: list[str]
) -> ColumnTransformer:
    """Build the preprocessing step of the model Pipeline.

    It is fitted with the model, on training rows only, so nothing leaks from
    validation or test data, and the logged model takes raw rows.

    Args:
        cfg: The ``preprocessing`` node (numeric_imputer, add_indicator, scaler, encoder).
            ``add_indicator`` adds a 0/1 column for each feature that had missing values;
            ``poly_degree`` > 1 adds polynomial (or, with ``interaction_only``, interaction)
            terms of the numeric columns.
        numeric: Names of the numeric columns.
        categorical: Names of the categorical columns.

    Returns:
        A ColumnTransformer that imputes, expands and scales numeric columns and imputes
        and encodes categorical ones; other columns are dropped.

    Raises:
        ValueError: If ``poly_degree`` is below 1.
    """
    if cfg.poly_degree < 1:
        raise ValueError(f"preprocessing.poly_degree={cfg.poly_degree} must be >= 1 (1 = off)")
    scaler = Scaler(cfg.scaler)
    numeric_steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy=NumericImputer(cfg.numeric_imputer).value)),
    ]
    if cfg.poly_degree > 1:
        # Powers and products of the imputed numeric columns, scaled afterwards like the rest.
        numeric_steps.append(("poly", PolynomialFeatures(
            degree=cfg.poly_degree, interaction_only=cfg.interaction_only, include_bias=False)))
    if scaler is not Scaler.none:
        numeric_steps.append(("scale", _SCALERS[scaler]()))
    encoder: Any
    if Encoder(cfg.encoder) is Encoder.onehot:
        # Categories unseen in training become all-zero rows instead of an error at serving time.
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    categorical_steps = [
        ("impute", SimpleImputer(strategy="most_frequent")),
        ("encode", encoder),
    ]
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), numeric))
    if categorical:
        transformers.append(("categorical", Pipeline(categorical_steps), categorical))
    if cfg.add_indicator:
        # One 0/1 column per feature that had gaps in training, kept out of the encoders.
        transformers.append(("missing", MissingIndicator(features="missing-only"),
                             numeric + categorical))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
