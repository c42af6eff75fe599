"""Hydra launcher plugin ``hydra/launcher=tabflow``: Hydra's basic launcher, composing once.

* ``tabflow_launcher``: the plugin class and its config schema (cheap to import).
* ``_compose``: job configs composed once per distinct set of config-group choices.

It depends on Hydra only (no tabflow module), so it works in any Hydra app.
"""
