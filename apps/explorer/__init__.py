"""The atomarch Explorer: a Dash app around a trained VAE (molecules or crystals) and its
whole-dataset latent map.

Launch it with ``atomarch explore``; build it in Python with :func:`create_app`.

Modules:
    figures: pure functions building the Plotly figures (map, molecules, crystal unit cells, overlays).
    service: :class:`~apps.explorer.service.Explorer`, the model-side work behind the callbacks
        (plain methods, unit-testable without a browser).
    app: the page layout, the thin Dash callbacks and :func:`run_explorer` (the CLI entry).
"""

from apps.explorer.app import create_app, run_explorer

__all__ = ["create_app", "run_explorer"]
