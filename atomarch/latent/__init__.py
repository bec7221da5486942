"""Latent-space tools: paths between latents (more tools join as the project grows)."""

from atomarch.latent.paths import latent_path, lerp, slerp

__all__ = ["latent_path", "lerp", "slerp"]
