"""Write customers.csv: a small churn table like users bring (run once; the CSV is committed).

It has an identifier column, a column name with spaces and symbols, numeric and text
columns with missing values, and a few rows without a target.
"""

from pathlib import Path

import numpy as np
import pandas as pd

rng = np.random.default_rng(7)
n = 300
tenure = rng.integers(1, 72, n)
charges = rng.normal(65, 20, n).round(2)
contract = rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.55, 0.25, 0.2])
region = rng.choice(["north", "south", "east", "west"], n)
score = -0.04 * tenure + 0.03 * charges + np.where(contract == "month-to-month", 1.0, -1.0)
churned = np.where(score + rng.normal(0, 0.7, n) > 0.5, "yes", "no").astype(object)
frame = pd.DataFrame({
    "Customer ID": [f"C{i:04d}" for i in range(n)],
    "age": rng.integers(18, 90, n).astype(float),
    "monthly charges ($)": charges,
    "tenure months": tenure,
    "contract": contract.astype(object),
    "region": region.astype(object),
    "churned": churned,
})
frame.loc[rng.choice(n, 25, replace=False), "age"] = np.nan
frame.loc[rng.choice(n, 15, replace=False), "contract"] = np.nan
frame.loc[rng.choice(n, 6, replace=False), "churned"] = np.nan
frame.to_csv(Path(__file__).with_name("customers.csv"), index=False)
