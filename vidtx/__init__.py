"""vidtx: video transformers (ViViT, TimeSformer, X-ViT) in JAX/Flax."""
