"""Decoders: latent ``z`` → structures, every family behind one seam (:class:`Decoder`).

* :mod:`~atomarch.nn.decoders.base`: the interface and the typed :class:`DecodeOptions`.
* :mod:`~atomarch.nn.decoders.common`: the parts the families share (global level, seeded
  noise streams, element tables).
* :mod:`~atomarch.nn.decoders.graph`: the graph-first molecule decoder (``kind: graph``).
* :mod:`~atomarch.nn.decoders.flow`: the experimental equivariant flow decoder (``kind: flow``).

The families are found by name in :data:`atomarch.registry.DECODERS`; neither imports the other.
"""

from atomarch.nn.decoders.base import DecodeOptions, Decoder, build_decoder

__all__ = ["DecodeOptions", "Decoder", "build_decoder"]
