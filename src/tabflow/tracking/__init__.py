"""Everything that talks to MLflow, one concern a module (the only package importing mlflow).

* :mod:`.store`: connect to (create, upgrade) a tracking store; experiments.
* :mod:`.queries`: find runs: a sweep's parent, its trials ranked by the objective.
* :mod:`.records`: params, metrics, tags and dataset inputs of a run; key formatting.
* :mod:`.provenance`: the code version and package versions recorded with runs.
* :mod:`.jobs`: one job output dir -> one MLflow run (live, and by ``tabflow upload``).
* :mod:`.models`: log and load a fitted pipeline (skops with exactly trusted types).
* :mod:`.registry`: Model Registry calls: versions, aliases, mirrored stages, tags.
* :mod:`.parent`: a sweep's parent run: elected among processes, reattached on resume.
* :mod:`.upload`: track a sweep's job dirs after a tracking outage.
* :mod:`.failures`: make tracking failures loud; close runs that job code leaked.
* :mod:`.monitoring`: training profiles and monitoring runs.

It is a library the rest of tabflow calls down into: the Hydra callback that decides
*when* to track (:mod:`tabflow.callback`) and the sweep's end live outside it.

MLflow is imported lazily in each module: importing it takes seconds, and ``--help``
must not pay.
"""
