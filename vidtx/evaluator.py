"""Multi-view evaluation shared by train.py and eval.py.

Each validation video arrives as V = num_test_clips x (1 or 3) views; the model scores every view,
the views of a video are aggregated, and top-1 / top-5 are counted per video.
"""

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vidtx import data as vidtx_data
from vidtx import sharding

# How the views of one video are combined (REFERENCE.md: ViViT mean of logits, TimeSformer and
# X-ViT sum of logits, MMAction2 mean of softmax). Input (B, V, K) -> (B, K).
AGGREGATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "mean_logits": lambda logits: jnp.mean(logits, axis=1),
    "sum_logits": lambda logits: jnp.sum(logits, axis=1),
    "mean_softmax": lambda logits: jnp.mean(jax.nn.softmax(logits, axis=-1), axis=1),
}


def topk_correct(scores: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """(B, K) scores, (B,) labels -> (B,) 1.0 where the label is among the k best scores."""
  k = min(k, scores.shape[-1])
  # lax.top_k breaks ties by the lower class index, like argmax: an untrained model with equal
  # logits is then scored as predicting class 0, not as right about everything.
  _, top_indices = jax.lax.top_k(scores, k)  # (B, k)
  return jnp.any(top_indices == labels[:, None], axis=-1).astype(jnp.float32)


class MultiViewEvaluator:
  """Evaluates params on one split: `run(params) -> {'top1', 'top5', 'num_videos', ...}`."""

  def __init__(self, model: nn.Module, dataset_configs: ml_collections.ConfigDict, split: str,
               *, batch_size: int, mesh: Mesh, aggregation: str = "mean_logits"):
    if aggregation not in AGGREGATIONS:
      raise ValueError(f"config.eval_aggregation={aggregation!r}: expected one of "
                       f"{sorted(AGGREGATIONS)}.")
    self.model = model
    self.dataset_configs = dataset_configs
    self.split = split
    self.batch_size = batch_size
    self.mesh = mesh
    self.aggregation = aggregation
    self.num_videos = int(dataset_configs.examples_per_subset[split])
    self.num_batches = math.ceil(self.num_videos / batch_size)
    self._local_batch_size = sharding.check_batch_size(batch_size, mesh, "eval_batch_size")
    self._eval_step = jax.jit(self._step, out_shardings=sharding.replicated(mesh))

  def _step(self, params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    views = batch["inputs"]
    b, v = views.shape[:2]
    # (B, V, T, H, W, C) -> (B*V, T, H, W, C): views are independent clips for the model.
    clips = views.reshape((b * v,) + views.shape[2:])
    logits, _ = self.model.apply({"params": params}, clips, train=False)
    logits = logits.astype(jnp.float32).reshape(b, v, -1)  # (B*V, K) -> (B, V, K)
    scores = AGGREGATIONS[self.aggregation](logits)
    mask = batch["batch_mask"]
    return {
        "top1": jnp.sum(topk_correct(scores, batch["label"], 1) * mask),
        "top5": jnp.sum(topk_correct(scores, batch["label"], 5) * mask),
        "count": jnp.sum(mask),
    }

  def _batches(self) -> Iterator[dict[str, np.ndarray]]:
    """Exactly `num_batches` local batches on every process, padding with fully masked ones.

    Processes can hold different numbers of videos; all of them must run the same number of
    steps or the collective in the jitted step would wait forever.
    """
    dataset = vidtx_data.build_eval_dataset(
        self.dataset_configs, self.split, batch_size=self._local_batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    template = None
    iterator = dataset.as_numpy_iterator()
    for _ in range(self.num_batches):
      batch = next(iterator, None)
      if batch is None:
        if template is None:
          raise ValueError(
              f"Split {self.split!r} produced no batches on process {jax.process_index()}: "
              f"examples_per_subset[{self.split!r}]={self.num_videos} does not match the data.")
        batch = {k: np.zeros_like(x) for k, x in template.items()}
      template = batch
      yield batch
    if next(iterator, None) is not None:
      raise ValueError(
          f"Split {self.split!r} has more than examples_per_subset[{self.split!r}]="
          f"{self.num_videos} videos; set config.dataset_configs.examples_per_subset to the "
          "true count so that every video is evaluated.")

  def run(self, params: Any) -> dict[str, float]:
    start = time.time()
    totals = {"top1": 0.0, "top5": 0.0, "count": 0.0}
    for batch in self._batches():
      out = self._eval_step(params, sharding.to_global(batch, self.mesh))
      for k in totals:
        totals[k] += float(out[k])
    count = max(totals["count"], 1.0)
    return {
        "top1": totals["top1"] / count,
        "top5": totals["top5"] / count,
        "num_videos": int(totals["count"]),
        "views_per_video": int(self.dataset_configs.num_test_clips
                               * (3 if self.dataset_configs.do_three_spatial_crops else 1)),
        "eval_seconds": time.time() - start,
    }
