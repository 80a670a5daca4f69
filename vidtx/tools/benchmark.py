r"""Training speed of a config: steps/s, clips/s, TFLOP/s, model FLOPs utilisation, peak memory
and compile time, on batches already on the device (compute) and from the input pipeline.

  python -m vidtx.tools.benchmark --config=configs/k400_vivit_fe.py --batch_size=8 \
      --config.model.dtype=bfloat16 --peak_tflops=989
  python -m vidtx.tools.benchmark --config=configs/synthetic_timesformer.py --steps=20

It builds exactly train.py's state and step (vidtx.train_state.make_train_step: the mesh of
config.mesh, the rule-table shardings, gradient accumulation, remat and scan as configured),
compiles the step once (compile time), then:
- compute: times --steps steps on one random batch already on the devices: the model's speed;
- end_to_end: times --steps steps fed by the training reader (prefetched by tf.data, handed
  over with vidtx.sharding.to_global as train.py does). With an empty dataset base_dir (a
  recipe before its data is prepared) it reads a generated Kinetics-shaped DMVR dataset
  (vidtx.tools.input_benchmark.fake_dataset).
Each timing starts after --warmup steps and ends when the last step's result is on the host.

Model FLOPs are counted as the papers count (vidtx.tools.complexity: multiply-adds of one
forward pass per clip), times 2 FLOPs per multiply-add and 3 for forward + backward; what
rematerialisation recomputes is not counted (model FLOPs utilisation, as in PaLM). MFU divides
by --peak_tflops (the devices' dense peak for the compute dtype, per device; the default comes
from a small table of known accelerators when it recognises the device, else MFU is not shown).
Peak memory is the device's peak_bytes_in_use where the runtime reports it (GPU, TPU), else
XLA's estimate for the compiled step (arguments + outputs + temporaries, per device).
"""

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vidtx import data as vidtx_data
from vidtx import models, sharding
from vidtx import train_state as state_lib
from vidtx.data import pipeline
from vidtx.tools import complexity, input_benchmark

_FLAGS = flags.FLAGS

# Dense peak TFLOP/s per device in bfloat16 (vendor data sheets), by device_kind substring.
PEAK_BF16_TFLOPS = {
  "H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "V100": 125.0,
  "TPU v6": 918.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v4": 275.0,
}


def default_peak_tflops(device: Any, dtype: str) -> float | None:
  """The known dense peak of `device` for `dtype`, or None (CPUs, unknown devices)."""
  for kind, peak in PEAK_BF16_TFLOPS.items():
    if kind in device.device_kind:
      # float32 matmuls run as TF32 / bf16 passes on these; their fp32 peak is not comparable.
      return peak if dtype == "bfloat16" else None
  return None


def training_flops_per_clip(config: ml_collections.ConfigDict) -> float:
  """2 FLOPs per multiply-add x 3 (forward + backward) x the forward multiply-adds of a clip."""
  return 6.0 * complexity.config_complexity(config)["macs_per_view"]


def peak_memory_bytes(compiled: Any) -> tuple[int | None, str]:
  """(bytes, where the figure comes from) for the busiest device."""
  stats = [d.memory_stats() or {} for d in jax.local_devices()]
  peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use")]
  if peaks:
    return max(peaks), "device peak_bytes_in_use"
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None, "not reported"
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
           + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
  return int(total), "XLA estimate for the step"


def time_steps(step: Callable[..., Any], state: Any, batches: Iterator[dict[str, Any]], *,
               warmup: int, steps: int) -> tuple[Any, float]:
  """Runs warmup + steps steps; returns (state, seconds of the timed steps)."""
  for _ in range(warmup):
    state, step_metrics = step(state, next(batches))
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, step_metrics = step(state, next(batches))
  jax.device_get(step_metrics)  # The last step's result on the host: every step has run.
  return state, time.perf_counter() - start


def benchmark(config: ml_collections.ConfigDict, *, steps: int = 10, warmup: int = 2,
              batch_size: int | None = None, peak_tflops: float | None = None,
              modes: tuple[str, ...] = ("compute", "end_to_end")) -> dict[str, Any]:
  """Measures `config`'s training step; returns the figures main() prints."""
  batch_size = int(batch_size or config.batch_size)
  with config.unlocked():
    config.batch_size = batch_size
  mesh = sharding.make_mesh(config.get("mesh"))
  local_batch_size = sharding.check_batch_size(batch_size, mesh)
  dc = config.dataset_configs
  model = models.build(config.model_name, config.model, dc.num_classes)
  tx, schedule = state_lib.optimizer_from_config(config, dc)
  ema_decay = float(config.get("ema_decay") or 0.0)
  clip_shape = (dc.num_frames, dc.crop_size, dc.crop_size, 3)
  state, abstract = state_lib.create_train_state(
      model, tx, (local_batch_size,) + clip_shape, mesh, jax.random.key(0), ema=ema_decay > 0)
  step = state_lib.make_train_step(
      model, tx, schedule, abstract, mesh, num_classes=dc.num_classes,
      label_smoothing=config.get("label_smoothing", 0.0),
      class_splits=tuple(dc.get("class_splits") or ()),
      multi_label=bool(dc.get("multi_label", False)),
      mixup_alpha=float(config.get("mixup", {}).get("alpha", 0.0) or 0.0),
      grad_accum_steps=int(config.get("grad_accum_steps") or 1), ema_decay=ema_decay)

  # One random batch, made on the devices in the batch's sharding.
  rows = len(pipeline.class_splits(dc)) or 1
  label_shape = (batch_size, rows) if rows > 1 else (batch_size,)
  data_sharding = sharding.data_sharding(mesh)
  device_batch = jax.jit(lambda key: {
      "inputs": jax.random.normal(key, (batch_size,) + clip_shape, jnp.float32),
      "label": jax.random.randint(key, label_shape, 0, min(dc.get("class_splits") or
                                                         [dc.num_classes])),
  }, out_shardings=data_sharding)(jax.random.key(1))

  start = time.perf_counter()
  compiled = step.lower(state, device_batch).compile()
  compile_seconds = time.perf_counter() - start
  flops_per_clip = training_flops_per_clip(config)
  dtype = config.model.get("dtype", "float32")
  if peak_tflops is None:
    peak_tflops = default_peak_tflops(jax.devices()[0], dtype)

  result = {
    "config": config.get("experiment_name", ""), "model": config.model_name,
    "variant": config.model.get("variant"), "attention": config.model.get("attention"),
    "dtype": dtype, "remat_policy": config.model.get("remat_policy", "none"),
    "scan_layers": bool(config.model.get("scan_layers", False)),
    "batch_size": batch_size, "grad_accum_steps": int(config.get("grad_accum_steps") or 1),
    "clip": list(clip_shape), "devices": jax.device_count(),
    "device_kind": jax.devices()[0].device_kind, "mesh": dict(mesh.shape),
    "compile_seconds": compile_seconds, "training_gflops_per_clip": flops_per_clip / 1e9,
    "peak_tflops_per_device": peak_tflops,
  }

  def figures(seconds: float) -> dict[str, float]:
    steps_per_sec = steps / seconds
    tflops = steps_per_sec * batch_size * flops_per_clip / 1e12
    out = {"steps_per_sec": steps_per_sec, "clips_per_sec": steps_per_sec * batch_size,
           "tflops": tflops, "tflops_per_device": tflops / jax.device_count()}
    if peak_tflops:
      out["mfu"] = tflops / (peak_tflops * jax.device_count())
    return out

  if "compute" in modes:
    def same_batch():
      while True:
        yield device_batch
    state, seconds = time_steps(compiled, state, same_batch(), warmup=warmup, steps=steps)
    result["compute"] = figures(seconds)

  if "end_to_end" in modes:
    with tempfile.TemporaryDirectory() as scratch:
      dataset_configs = _readable_dataset(config, scratch)
      reader = vidtx_data.build_train_dataset(
          dataset_configs, batch_size=local_batch_size, seed=0,
          process_index=jax.process_index(), process_count=jax.process_count())

      def from_reader():
        for element in reader.as_numpy_iterator():
          device, _ = pipeline.split_host_fields(element)
          yield sharding.to_global(device, mesh)
      state, seconds = time_steps(compiled, state, from_reader(), warmup=warmup, steps=steps)
      result["end_to_end"] = figures(seconds)

  memory, source = peak_memory_bytes(compiled)
  result["peak_memory_gib"] = None if memory is None else memory / 2**30
  result["peak_memory_source"] = source
  return result


def _readable_dataset(config: ml_collections.ConfigDict,
                      scratch: str) -> ml_collections.ConfigDict:
  """The config's dataset, prepared; a generated Kinetics-shaped one when base_dir is empty."""
  dc = config.dataset_configs
  if not dc.get("base_dir") and config.get("dataset_name") != "synthetic":
    frames = max(80, int(math.ceil(dc.num_frames * dc.get("stride", 2) * 1.2)))
    print(f"dataset_configs.base_dir is empty: reading 32 generated videos of {frames} frames "
          f"of 256 x 340 from {scratch}.", flush=True)
    with config.unlocked():
      dc.base_dir = input_benchmark.fake_dataset(
          scratch, videos=32, frames=frames, height=256, width=340,
          num_classes=dc.num_classes)
      dc.tables = {"train": "train.tfrecord@4", "validation": "validation.tfrecord@4"}
  return vidtx_data.prepare_dataset(config)


def summary(result: dict[str, Any]) -> str:
  """Human-readable lines of `benchmark`'s result."""
  lines = [f"{result['model']} {result['variant']} ({result['attention']}), {result['dtype']}, "
           f"batch {result['batch_size']} of {'x'.join(map(str, result['clip']))}, "
           f"{result['devices']} x {result['device_kind']}, mesh {result['mesh']}: "
           f"compiled in {result['compile_seconds']:.1f} s; "
           f"{result['training_gflops_per_clip']:.1f} training GFLOPs per clip."]
  for mode in ("compute", "end_to_end"):
    if mode in result:
      r = result[mode]
      mfu = f", MFU {r['mfu']:.1%}" if "mfu" in r else ""
      lines.append(f"{mode:>10}: {r['steps_per_sec']:.3f} steps/s, {r['clips_per_sec']:.2f} "
                   f"clips/s, {r['tflops']:.3f} TFLOP/s{mfu}")
  if result["peak_memory_gib"] is not None:
    lines.append(f"peak memory {result['peak_memory_gib']:.2f} GiB per device "
                 f"({result['peak_memory_source']})")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
  logging.set_verbosity(logging.WARNING)
  modes = ("compute", "end_to_end") if _FLAGS.mode == "both" else (_FLAGS.mode,)
  result = benchmark(_FLAGS.config, steps=_FLAGS.steps, warmup=_FLAGS.warmup,
                     batch_size=_FLAGS.batch_size, peak_tflops=_FLAGS.peak_tflops, modes=modes)
  result["config"] = config_flags.get_config_filename(_FLAGS["config"])
  print(summary(result), flush=True)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  # Flags are defined here, not at import, as in train.py.
  config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).", lock_config=True)
  flags.DEFINE_integer("steps", 10, "Timed steps per mode.")
  flags.DEFINE_integer("warmup", 2, "Steps run before timing (after compilation).")
  flags.DEFINE_integer("batch_size", None, "Global batch (default: config.batch_size).")
  flags.DEFINE_float("peak_tflops", None, "Dense peak TFLOP/s of one device for MFU (default: "
                     "known accelerators in bfloat16).")
  flags.DEFINE_enum("mode", "both", ["compute", "end_to_end", "both"], "What to time.")
  flags.mark_flags_as_required(["config"])
  app.run(main)
