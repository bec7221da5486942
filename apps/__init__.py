"""Applications built on the ``atomarch`` package (the Explorer web app)."""
