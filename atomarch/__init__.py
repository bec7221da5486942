"""atomarch: generative design of atomic structures with E(3)-equivariant autoencoders.

The one entry point for trained models is :func:`load_model`::

    model = atomarch.load_model("checkpoints/qm9-property")
    z = model.encode(list_of_atoms)        # [n, latent_dim]
    props = model.predict(list_of_atoms)   # {"gap": [n], ...} in eV
"""

from atomarch._version import __version__

__all__ = ["__version__", "load_model"]


def load_model(path, device="cpu"):
    """Load a trained model; see :func:`atomarch.models.loading.load_model`."""
    from atomarch.models.loading import load_model as _load

    return _load(path, device)
