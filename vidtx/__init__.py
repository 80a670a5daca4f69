"""vidtx: video transformers (ViViT, TimeSformer, X-ViT) in JAX/Flax."""

import os

# TensorFlow only feeds the input pipeline here; its C++ start-up chatter (oneDNN notices, CPU
# feature lines) buries the progress output. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
