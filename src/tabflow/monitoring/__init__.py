"""Monitoring a registered model: is the data it now sees the data it was trained on?

The steps, one module each, in the order ``tabflow monitor`` takes them:

* :mod:`.profile`: the training profile logged with every registered version (per feature
  its type, missing rate, quantiles, bins and counts or category frequencies, plus a
  bounded reference sample); built at registration, read back when monitoring.
* :mod:`.batch`: read a new batch and check it against the profile's schema (missing,
  extra or mistyped columns, unseen label classes), before any work.
* :mod:`.drift`: per-feature drift tests chosen by type and size, missing-rate changes,
  unseen categories, PSI; dataset drift from the share of drifted features.
* :mod:`.report`: the console table and the HTML report with per-feature plots.
* :mod:`.monitor`: the whole check against a version (performance against its test
  baseline when labels come with the batch), tracked as an MLflow run.
* :mod:`.retrain`: a new sweep of the version's own configuration on new data,
  warm-started from its best parameters.

Nothing here imports MLflow; tracking goes through :mod:`tabflow.tracking`.
"""
