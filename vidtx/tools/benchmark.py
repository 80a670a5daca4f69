r"""Training speed of a config: steps/s, clips/s, TFLOP/s, model FLOPs utilisation, peak memory
and compile time, on batches already on the device (compute) and from the input pipeline.

  python -m vidtx.tools.benchmark --config=configs/k400_vivit_fe.py --batch_size=8 \
      --config.model.dtype=bfloat16 --peak_tflops=989
  python -m vidtx.tools.benchmark --config=configs/synthetic_timesformer.py --steps=20
  python -m vidtx.tools.benchmark --config=configs/k400_timesformer.py --batch_size=4 \
      --config.model.variant=S/16 --config.dataset_configs.num_frames=8 \
      --config.dataset_configs.crop_size=112 --mode=compute --peer=hf

It builds exactly train.py's state and step (vidtx.train_state.make_train_step: the mesh of
config.mesh and its logical axis rules, gradient accumulation, remat and scan as configured),
compiles the step once (compile time), then:
- compute: times --steps steps on one random batch already on the devices: the model's speed.
  The batch is what the reader sends (uint8 clips, with scale jitter the window buffers, and
  the parameters of the config's augmentation, each applied), so the step includes the
  augmentation on the device (vidtx.device_augment, the window's resize first); its share of
  the step is timed alone on the same batch;
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

Side by side (--peer hf; compute mode): the same-size Hugging Face PyTorch model runs in a
subprocess of the same run (python -m vidtx.tools.hf_peer: torch and transformers only) with the
same batch size and clip, dtype (float32, or bf16 autocast when model.dtype is bfloat16) and
optimizer class (SGD momentum or AdamW, fused on CUDA), on CUDA when torch sees one, else the
CPU; --peer_compile runs it under torch.compile. Peers (peer_spec): TimeSformer, attention
divided / space / joint (HF attention_type divided_space_time / space_only / joint_space_time),
and ViViT Model 1 (attention spatio_temporal); other models are refused. Both sides are warmed up
(--warmup steps, compilation excluded), then timed alternately for --peer_rounds rounds of
--steps training steps (forward + backward + optimizer), then --steps forward passes, each side
going first every other round; the figures are medians over rounds. speedup = HF seconds / vidtx
seconds (above 1: vidtx is faster). peer_spec lists what the peer cannot mirror (differences).
With --peer on a GPU, JAX takes at most XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 of its memory
(unless set) so that the peer has the rest.

compute mode imports no TensorFlow (nor clu, av): it runs on accelerator images without them.
"""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

import vidtx
from vidtx import cli, device_augment, models, sharding
from vidtx import train_state as state_lib
from vidtx.data import reader_config
from vidtx.errors import UserError
from vidtx.tools import complexity

# The input pipeline (vidtx.data, vidtx.tools.input_benchmark) imports TensorFlow: it is
# imported in the end_to_end mode only, so that compute mode runs where TensorFlow is absent.

_FLAGS = flags.FLAGS

# Dense peak TFLOP/s per device in bfloat16 (vendor data sheets), by device_kind substring.
PEAK_BF16_TFLOPS = {
  "H200": 989.0,
  "H100": 989.0,
  "A100": 312.0,
  "L4": 121.0,
  "V100": 125.0,
  "TPU v6": 918.0,
  "TPU v5p": 459.0,
  "TPU v5 lite": 197.0,
  "TPU v5e": 197.0,
  "TPU v4": 275.0,
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
  total = (
    analysis.argument_size_in_bytes
    + analysis.output_size_in_bytes
    + analysis.temp_size_in_bytes
    - analysis.alias_size_in_bytes
  )
  return int(total), "XLA estimate for the step"


def time_steps(
  step: Callable[..., Any],
  state: Any,
  batches: Iterator[dict[str, Any]],
  *,
  warmup: int,
  steps: int,
) -> tuple[Any, float]:
  """Runs warmup + steps steps; returns (state, seconds of the timed steps)."""
  for _ in range(warmup):
    state, step_metrics = step(state, next(batches))
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, step_metrics = step(state, next(batches))
  # The last step's (replicated) result on the host: every step has run.
  state_lib.fetch_replicated(step_metrics)
  return state, time.perf_counter() - start


# ----------------------------------------------------------------------------------------
# The Hugging Face PyTorch peer (--peer hf).
# ----------------------------------------------------------------------------------------

# vidtx model.attention -> the Hugging Face model's (None: the model has one kind).
PEER_ATTENTIONS = {
  "timesformer": {
    "divided": "divided_space_time",
    "space": "space_only",
    "joint": "joint_space_time",
  },
  "vivit": {"spatio_temporal": None},
}

# Hugging Face names of what vidtx.optim.NO_DECAY_PATTERNS keeps out of weight decay.
PEER_NO_DECAY = (r"position_embeddings", r"time_embeddings", r"cls_token", r"layernorm")


def _peer_optimizer(config: ml_collections.ConfigDict, differences: list[str]) -> dict[str, Any]:
  """The peer's torch optimizer for config.optimizer; what it does not mirror appended to
  `differences`."""
  opt = config.optimizer_configs
  lr = float(config.lr_configs.base_learning_rate)
  if config.optimizer == "momentum":
    optimizer = {
      "name": "sgd",
      "lr": lr,
      "momentum": float(opt.momentum),
      "nesterov": bool(opt.get("nesterov", False)),
      "weight_decay": float(opt.get("weight_decay") or 0.0),
    }
  elif config.optimizer == "adamw":
    optimizer = {
      "name": "adamw",
      "lr": lr,
      "betas": [float(opt.get("beta1", 0.9)), float(opt.get("beta2", 0.999))],
      "eps": 1e-8,
      "weight_decay": float(opt.get("adamw_weight_decay") or 0.0),
    }
    if opt.get("weight_decay"):
      differences.append(
        "optimizer_configs.weight_decay (L2 added to AdamW's gradient): the "
        "peer's AdamW has only its decoupled decay"
      )
  else:
    raise UserError(
      f"--peer hf: config.optimizer={config.optimizer!r}: expected 'momentum' or 'adamw'."
    )
  if opt.get("no_decay_patterns") is not None:
    differences.append(
      "optimizer_configs.no_decay_patterns: the peer skips the default "
      "parameters (embeddings, class token, LayerNorms)"
    )
  return optimizer


def peer_spec(
  config: ml_collections.ConfigDict,
  *,
  batch_size: int | None = None,
  compile: bool = False,
  warmup: int = 2,
  steps: int = 10,
  rounds: int = 3,
) -> dict[str, Any]:
  """The vidtx.tools.hf_peer spec of `config`: the same-size Hugging Face model, batch, dtype
  and optimizer. Raises ValueError for a model or attention without a peer; what the peer does
  not mirror is listed under 'differences'."""
  name, attention = config.model_name, config.model.get("attention")
  if name not in PEER_ATTENTIONS or attention not in PEER_ATTENTIONS[name]:
    raise UserError(
      f"--peer hf: model_name={name!r} with model.attention={attention!r} has no Hugging "
      "Face peer. Peers: timesformer with attention divided, space or joint "
      "(TimesformerForVideoClassification), vivit with attention spatio_temporal (Model 1, "
      "VivitForVideoClassification)."
    )
  m = models.MODELS[name].make_config(config.model)  # Sizes resolved from the variant.
  dc = reader_config.DatasetConfig.from_config(config.dataset_configs, views_only=True)
  differences = []
  hf_config = {
    "image_size": dc.crop_size,
    "num_frames": dc.num_frames,
    "num_channels": 3,
    "hidden_size": m.hidden_size,
    "num_hidden_layers": m.num_layers,
    "num_attention_heads": m.num_heads,
    "intermediate_size": m.mlp_dim,
    # gelu_pytorch_tanh: the tanh GELU in one kernel (HF ViViT's default gelu_fast is the same
    # function in several).
    "hidden_act": "gelu_pytorch_tanh" if m.gelu_approximate else "gelu",
    "hidden_dropout_prob": m.dropout_rate,
    "attention_probs_dropout_prob": m.attention_dropout_rate,
    "layer_norm_eps": m.layer_norm_epsilon,
    "qkv_bias": True,
    "num_labels": dc.num_classes,
  }
  if name == "timesformer":
    hf_config.update(
      patch_size=m.patch_size,
      attention_type=PEER_ATTENTIONS[name][attention],
      drop_path_rate=m.stochastic_depth,
    )
    if m.positional_embedding != "space_time" and attention != "space":
      differences.append(
        f"model.positional_embedding={m.positional_embedding!r}: the HF model "
        "adds both the space and the time embedding"
      )
  else:
    if m.classifier != "token":
      raise UserError(
        "--peer hf: HF ViViT classifies the class token; model.classifier="
        f"{m.classifier!r} has no peer."
      )
    hf_config["tubelet_size"] = [m.tubelet_size, m.patch_size, m.patch_size]
    if m.stochastic_depth:
      differences.append("model.stochastic_depth: HF ViViT has no drop path")
  if m.remat_policy not in ("none", "full"):
    differences.append(
      f"model.remat_policy={m.remat_policy!r}: the peer checkpoints whole layers (as 'full')"
    )
  if (config.get("mixup", {}).get("alpha") or 0) > 0:
    differences.append("mixup: not done by the peer")
  if dc.multi_hot:
    differences.append("class_splits / multi_label: the peer trains one softmax over num_classes")

  optimizer = _peer_optimizer(config, differences)
  return {
    "model": name,
    "hf_config": hf_config,
    "batch_size": int(batch_size or config.batch_size),
    "num_frames": int(dc.num_frames),
    "crop_size": int(dc.crop_size),
    "dtype": m.dtype,
    "optimizer": optimizer,
    "no_decay": list(PEER_NO_DECAY),
    "max_grad_norm": float(config.get("max_grad_norm") or 0.0),
    "label_smoothing": float(config.get("label_smoothing") or 0.0),
    "grad_accum_steps": int(config.get("grad_accum_steps") or 1),
    "ema_decay": float(config.get("ema_decay") or 0.0),
    "gradient_checkpointing": m.remat_policy != "none",
    "compile": bool(compile),
    "warmup": int(warmup),
    "steps": int(steps),
    "rounds": int(rounds),
    "seed": 0,
    "differences": differences,
  }


class PeerProcess:
  """python -m vidtx.tools.hf_peer --serve: started, asked for timings, stopped."""

  def __init__(self, spec: dict[str, Any]):
    env = dict(os.environ)
    # The peer imports vidtx.tools.hf_peer from this checkout, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(vidtx.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # Its errors go to this process's stderr; stdout carries the protocol.
    self.proc = subprocess.Popen(
      [sys.executable, "-m", "vidtx.tools.hf_peer", "--serve", json.dumps(spec)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      env=env,
    )
    self.ready = self._read()

  def _read(self) -> dict[str, Any]:
    from vidtx.tools.hf_peer import PREFIX  # A constant: torch is imported only in the peer.

    for line in self.proc.stdout:
      if line.startswith(PREFIX):
        return json.loads(line[len(PREFIX) :])
    code = self.proc.wait()
    raise RuntimeError(
      f"The Hugging Face peer (python -m vidtx.tools.hf_peer) exited with code "
      f"{code}; its error is above."
    )

  def ask(self, **request: Any) -> dict[str, Any]:
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    if self.proc.poll() is None:
      self.proc.stdin.close()
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()


def side_by_side(
  step: Callable[..., Any],
  forward: Callable[..., Any],
  state: Any,
  batches: Iterator[dict[str, Any]],
  spec: dict[str, Any],
  *,
  warmup: int,
  steps: int,
  rounds: int,
) -> tuple[Any, dict[str, Any]]:
  """vidtx's compiled `step` and `forward` and the peer of `spec`, warmed up, then timed
  alternately for `rounds` rounds of `steps` steps; returns (state, figures: medians)."""
  if steps < 1 or rounds < 1:
    raise UserError(f"--steps={steps} and --peer_rounds={rounds}: expected >= 1.")
  batch = next(batches)

  def vidtx_forward(n: int) -> float:
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(n):
      out = forward(state.params, batch["inputs"])
    jax.block_until_ready(out)
    return time.perf_counter() - start

  for _ in range(warmup):
    state, _ = step(state, next(batches))
  vidtx_forward(max(warmup, 1))
  peer = PeerProcess(spec)  # Builds and warms up the peer while vidtx waits.
  try:
    times = {side: {"train": [], "forward": []} for side in ("vidtx", "hf")}
    for r in range(rounds):
      for op in ("train", "forward"):
        for side in ("vidtx", "hf") if r % 2 == 0 else ("hf", "vidtx"):
          if side == "hf":
            seconds = peer.ask(op=op, steps=steps)["seconds"]
          elif op == "train":
            state, seconds = time_steps(step, state, batches, warmup=0, steps=steps)
          else:
            seconds = vidtx_forward(steps)
          times[side][op].append(seconds / steps)
    peer_memory = peer.ask(op="summary")["peak_memory_bytes"]
  finally:
    peer.close()

  out = {"rounds": rounds, "steps_per_round": steps, "differences": list(spec["differences"])}
  for side in ("vidtx", "hf"):
    out[side] = {
      "train_step_seconds": statistics.median(times[side]["train"]),
      "forward_seconds": statistics.median(times[side]["forward"]),
      "train_step_seconds_all": times[side]["train"],
      "forward_seconds_all": times[side]["forward"],
    }
  device = jax.devices()[0]
  kind = device.device_kind
  out["vidtx"].update(
    devices=jax.device_count(),
    device=kind if kind.lower().startswith(device.platform) else f"{device.platform} {kind}",
  )
  out["hf"].update(
    {k: v for k, v in peer.ready.items() if k != "ready"}, peak_memory_bytes=peer_memory
  )
  if jax.device_count() > 1:
    out["differences"].append(f"vidtx runs on {jax.device_count()} devices, the peer on one")
  if (device.platform == "gpu") != out["hf"]["device"].startswith("cuda"):
    out["differences"].append(
      f"vidtx runs on {device.platform}, the peer on "
      f"{out['hf']['device']} (README: Install on a GPU / TPU)"
    )
  out["speedup"] = {
    key: out["hf"][f"{key}_seconds"] / out["vidtx"][f"{key}_seconds"]
    for key in ("train_step", "forward")
  }
  return state, out


def _train_step(
  config: ml_collections.ConfigDict,
  dc: reader_config.DatasetConfig,
  local_input_shape: tuple[int, ...],
  mesh: jax.sharding.Mesh,
) -> tuple[Any, Any, Any]:
  """(model, train state, jitted train step) as train.py makes them for `config` and its
  dataset `dc`; local_input_shape: this process's (B, T, H, W, C)."""
  model = models.build(config.model_name, config.model, dc.num_classes)
  tx, schedule = state_lib.optimizer_from_config(config, dc)
  ema_decay = float(config.get("ema_decay") or 0.0)
  rules = sharding.rules_from_config(config.get("mesh"))
  state, abstract = state_lib.create_train_state(
    model, tx, local_input_shape, mesh, jax.random.key(0), ema=ema_decay > 0, rules=rules
  )
  step = state_lib.make_train_step(
    model,
    tx,
    schedule,
    abstract,
    mesh,
    num_classes=dc.num_classes,
    label_smoothing=config.get("label_smoothing", 0.0),
    class_splits=dc.class_splits,
    multi_label=dc.multi_label,
    mixup_alpha=float(config.get("mixup", {}).get("alpha", 0.0) or 0.0),
    grad_accum_steps=int(config.get("grad_accum_steps") or 1),
    ema_decay=ema_decay,
    augmentation=reader_config.device_augmentation(dc),
    rules=rules,
  )
  return model, state, step


def _random_batch(
  dc: reader_config.DatasetConfig, input_shape: tuple[int, ...], mesh: jax.sharding.Mesh
) -> dict[str, jax.Array]:
  """One random global batch as the reader sends it (uint8 inputs (B, T, H, W, C), labels (B,)
  or (B, splits), the parameters of the config's augmentation, every one applied), made on the
  devices in the batch's sharding. `input_shape` is the model's; with scale jitter the inputs
  are the reader's window buffers, (B, T, S, S, C) with S = dc.window_size, resized on the
  device to the model's H = W."""
  batch_size, num_frames, crop, _, channels = input_shape
  side = dc.window_size or crop
  rows = len(dc.class_splits) or 1
  label_shape = (batch_size, rows) if rows > 1 else (batch_size,)
  data_sharding = sharding.data_sharding(mesh)
  augmentation = reader_config.device_augmentation(dc)
  buffer_shape = (batch_size, num_frames, side, side, channels)
  return jax.jit(
    lambda key: {
      "inputs": jax.random.randint(key, buffer_shape, 0, 256).astype(jnp.uint8),
      "label": jax.random.randint(key, label_shape, 0, min(dc.class_splits or [dc.num_classes])),
      **device_augment.random_params(key, augmentation, batch_size, crop),
    },
    out_shardings=data_sharding,
  )(jax.random.key(1))


def augmentation_seconds(
  dc: ml_collections.ConfigDict, batch: dict[str, jax.Array], mesh: jax.sharding.Mesh, steps: int
) -> float:
  """Seconds per step of the on-device augmentation alone (jitted, as in the step) on `batch`."""
  augmentation = reader_config.device_augmentation(dc)
  augment = jax.jit(lambda b: state_lib.augment_on_mesh(b, augmentation, mesh)["inputs"])
  jax.block_until_ready(augment(batch))  # compiles
  start = time.perf_counter()
  for _ in range(steps):
    out = augment(batch)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def _forward(
  model: Any,
  dc: reader_config.DatasetConfig,
  params: Any,
  inputs: jax.Array,
  mesh: jax.sharding.Mesh,
  rules: sharding.Rules,
) -> Any:
  """The evaluator's forward pass, compiled: uint8 clips normalised on the device, the model,
  traced under the mesh and config.mesh.rules as the evaluator's step (activations pinned; on a
  TPU 'auto' attention may take the splash kernel). The evaluator's views are crop-sized: of the
  training batch's window buffers (scale jitter) it takes the crop x crop corner."""
  normalisation = dc.normalisation
  crop = dc.crop_size

  def forward(params, inputs):
    clips = device_augment.normalise(inputs[:, :, :crop, :crop], *normalisation)
    return model.apply({"params": params}, clips, train=False)[0]

  return jax.jit(sharding.under_rules(forward, mesh, rules)).lower(params, inputs).compile()


def _end_to_end_seconds(
  config: ml_collections.ConfigDict,
  compiled: Any,
  state: Any,
  mesh: jax.sharding.Mesh,
  local_batch_size: int,
  *,
  warmup: int,
  steps: int,
) -> tuple[Any, float]:
  """(state, seconds) of `steps` train steps fed by the input pipeline."""
  # Imported here: the input pipeline needs TensorFlow (module docstring).
  from vidtx import data as vidtx_data
  from vidtx.data import bad_records

  with tempfile.TemporaryDirectory() as scratch:
    dataset = _readable_dataset(config, scratch)
    reader = vidtx_data.build_train_dataset(
      dataset,
      batch_size=local_batch_size,
      seed=0,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )

    def from_reader():
      for element in reader.as_numpy_iterator():
        device, _ = bad_records.split_host_fields(element)
        yield sharding.to_global(device, mesh)

    return time_steps(compiled, state, from_reader(), warmup=warmup, steps=steps)


def benchmark(
  config: ml_collections.ConfigDict,
  *,
  steps: int = 10,
  warmup: int = 2,
  batch_size: int | None = None,
  peak_tflops: float | None = None,
  modes: tuple[str, ...] = ("compute", "end_to_end"),
  peer: str | None = None,
  peer_compile: bool = False,
  peer_rounds: int = 3,
) -> dict[str, Any]:
  """Measures `config`'s training step; returns the figures main() prints.

  With `peer` ('hf') the compute figures come from the side-by-side timing (module docstring).
  """
  if peer not in (None, "", "none", "hf"):
    raise UserError(f"peer={peer!r}: expected 'hf' or none.")
  peer = peer if peer not in ("", "none") else None
  if peer and "compute" not in modes:
    raise UserError("--peer compares the compute mode: use --mode=compute or --mode=both.")
  batch_size = int(batch_size or config.batch_size)
  # The mapping is checked before anything is compiled: an unmapped model fails at once.
  spec = (
    peer_spec(
      config,
      batch_size=batch_size,
      compile=peer_compile,
      warmup=warmup,
      steps=steps,
      rounds=peer_rounds,
    )
    if peer
    else None
  )
  with config.unlocked():
    config.batch_size = batch_size
  mesh = sharding.make_mesh(config.get("mesh"))
  local_batch_size = sharding.check_batch_size(batch_size, mesh)
  # The dataset's fields, read once (the data itself only by the end-to-end mode).
  dc = reader_config.DatasetConfig.from_config(config.dataset_configs, views_only=True)
  clip_shape = (dc.num_frames, dc.crop_size, dc.crop_size, 3)
  model, state, step = _train_step(config, dc, (local_batch_size,) + clip_shape, mesh)
  device_batch = _random_batch(dc, (batch_size,) + clip_shape, mesh)

  start = time.perf_counter()
  compiled = step.lower(state, device_batch).compile()
  compile_seconds = time.perf_counter() - start
  flops_per_clip = training_flops_per_clip(config)
  dtype = config.model.get("dtype", "float32")
  if peak_tflops is None:
    peak_tflops = default_peak_tflops(jax.devices()[0], dtype)

  result = {
    "config": config.get("experiment_name", ""),
    "model": config.model_name,
    "variant": config.model.get("variant"),
    "attention": config.model.get("attention"),
    "dtype": dtype,
    "remat_policy": config.model.get("remat_policy", "none"),
    "scan_layers": bool(config.model.get("scan_layers", False)),
    "batch_size": batch_size,
    "grad_accum_steps": int(config.get("grad_accum_steps") or 1),
    "clip": list(clip_shape),
    "devices": jax.device_count(),
    "device_kind": jax.devices()[0].device_kind,
    "mesh": dict(mesh.shape),
    "compile_seconds": compile_seconds,
    "training_gflops_per_clip": flops_per_clip / 1e9,
    "peak_tflops_per_device": peak_tflops,
    "params": sum(int(x.size) for x in jax.tree.leaves(state.params)),
  }

  def figures(seconds: float) -> dict[str, float]:
    steps_per_sec = steps / seconds
    tflops = steps_per_sec * batch_size * flops_per_clip / 1e12
    out = {
      "steps_per_sec": steps_per_sec,
      "clips_per_sec": steps_per_sec * batch_size,
      "tflops": tflops,
      "tflops_per_device": tflops / jax.device_count(),
    }
    if peak_tflops:
      out["mfu"] = tflops / (peak_tflops * jax.device_count())
    return out

  def same_batch():
    while True:
      yield device_batch

  if "compute" in modes and spec is None:
    state, seconds = time_steps(compiled, state, same_batch(), warmup=warmup, steps=steps)
    result["compute"] = figures(seconds)
  elif "compute" in modes:
    rules = sharding.rules_from_config(config.get("mesh"))
    forward = _forward(model, dc, state.params, device_batch["inputs"], mesh, rules)
    state, side = side_by_side(
      compiled, forward, state, same_batch(), spec, warmup=warmup, steps=steps, rounds=peer_rounds
    )
    result["compute"] = figures(side["vidtx"]["train_step_seconds"] * steps)
    result["peer"] = side
  if "compute" in modes:
    # The step above includes the augmentation on the device; its share, timed alone.
    step_seconds = batch_size / result["compute"]["clips_per_sec"]
    augment_seconds = augmentation_seconds(dc, device_batch, mesh, steps)
    result["compute"]["augmentation_seconds"] = augment_seconds
    result["compute"]["augmentation_share"] = augment_seconds / step_seconds

  if "end_to_end" in modes:
    state, seconds = _end_to_end_seconds(
      config, compiled, state, mesh, local_batch_size, warmup=warmup, steps=steps
    )
    result["end_to_end"] = figures(seconds)

  memory, source = peak_memory_bytes(compiled)
  result["peak_memory_gib"] = None if memory is None else memory / 2**30
  result["peak_memory_source"] = source
  return result


def _readable_dataset(
  config: ml_collections.ConfigDict, scratch: str
) -> reader_config.DatasetConfig:
  """The config's dataset, prepared; a generated Kinetics-shaped one when base_dir is empty."""
  from vidtx import data as vidtx_data
  from vidtx.tools import input_benchmark

  dc = config.dataset_configs
  if not dc.base_dir and config.get("dataset_name") != "synthetic":
    frames = max(80, int(math.ceil(dc.num_frames * dc.stride * 1.2)))
    print(
      f"dataset_configs.base_dir is empty: reading 32 generated videos of {frames} frames "
      f"of 256 x 340 from {scratch}.",
      flush=True,
    )
    with config.unlocked():
      dc.base_dir = input_benchmark.fake_dataset(
        scratch, videos=32, frames=frames, height=256, width=340, num_classes=dc.num_classes
      )
      dc.tables = {"train": "train.tfrecord@4", "validation": "validation.tfrecord@4"}
  return vidtx_data.prepare_dataset(config)


def summary(result: dict[str, Any]) -> str:
  """Human-readable lines of `benchmark`'s result."""
  lines = [
    f"{result['model']} {result['variant']} ({result['attention']}), {result['dtype']}, "
    f"batch {result['batch_size']} of {'x'.join(map(str, result['clip']))}, "
    f"{result['devices']} x {result['device_kind']}, mesh {result['mesh']}: "
    f"compiled in {result['compile_seconds']:.1f} s; "
    f"{result['training_gflops_per_clip']:.1f} training GFLOPs per clip."
  ]
  for mode in ("compute", "end_to_end"):
    if mode in result:
      r = result[mode]
      mfu = f", MFU {r['mfu']:.1%}" if "mfu" in r else ""
      lines.append(
        f"{mode:>10}: {r['steps_per_sec']:.3f} steps/s, {r['clips_per_sec']:.2f} "
        f"clips/s, {r['tflops']:.3f} TFLOP/s{mfu}"
      )
      if "augmentation_share" in r:
        lines.append(
          f"{'':>10}  of which the augmentation on the device (uint8 in, timed alone): "
          f"{r['augmentation_seconds'] * 1e3:.2f} ms per step, {r['augmentation_share']:.2%}"
        )
  if result["peak_memory_gib"] is not None:
    lines.append(
      f"peak memory {result['peak_memory_gib']:.2f} GiB per device ({result['peak_memory_source']})"
    )
  if "peer" in result:
    p = result["peer"]
    hf = p["hf"]
    lines.append(
      f"side by side (medians of {p['rounds']} rounds of {p['steps_per_round']} "
      f"steps): vidtx {result['params'] / 1e6:.2f} M params on "
      f"{p['vidtx']['devices']} x {p['vidtx']['device']}; HF {hf['model']} "
      f"{hf['params'] / 1e6:.2f} M params on {hf['device']}, torch {hf['torch']}, "
      f"{hf['optimizer']}, {hf['dtype']}{', torch.compile' if hf['compile'] else ''}"
    )
    for op, key in (("train step", "train_step"), ("forward", "forward")):
      vidtx_ms = p["vidtx"][f"{key}_seconds"] * 1e3
      hf_ms = hf[f"{key}_seconds"] * 1e3
      lines.append(
        f"{op:>10}: vidtx {vidtx_ms:.1f} ms, HF PyTorch {hf_ms:.1f} ms: "
        f"speedup {p['speedup'][key]:.2f}x (HF time / vidtx time)"
      )
    for d in p["differences"]:
      lines.append(f"  peer difference: {d}")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
  logging.set_verbosity(logging.WARNING)
  modes = ("compute", "end_to_end") if _FLAGS.mode == "both" else (_FLAGS.mode,)
  peer = None if _FLAGS.peer == "none" else _FLAGS.peer
  if peer and not _FLAGS["mode"].present:
    modes = ("compute",)  # What the peer is compared on; --mode=both adds the input pipeline.
  if peer:
    # JAX takes 75% of a GPU's memory at start by default: leave the peer room. Read when the
    # backend starts (the first jax.devices() below), so set here.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.45")
  result = benchmark(
    _FLAGS.config,
    steps=_FLAGS.steps,
    warmup=_FLAGS.warmup,
    batch_size=_FLAGS.batch_size,
    peak_tflops=_FLAGS.peak_tflops,
    modes=modes,
    peer=peer,
    peer_compile=_FLAGS.peer_compile,
    peer_rounds=_FLAGS.peer_rounds,
  )
  result["config"] = config_flags.get_config_filename(_FLAGS["config"])
  print(summary(result), flush=True)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  # Flags are defined here, not at import, as in train.py.
  cli.define_config_flag()
  flags.DEFINE_integer("steps", 10, "Timed steps per mode.")
  flags.DEFINE_integer("warmup", 2, "Steps run before timing (after compilation).")
  flags.DEFINE_integer("batch_size", None, "Global batch (default: config.batch_size).")
  flags.DEFINE_float(
    "peak_tflops",
    None,
    "Dense peak TFLOP/s of one device for MFU (default: known accelerators in bfloat16).",
  )
  flags.DEFINE_enum(
    "mode",
    "both",
    ["compute", "end_to_end", "both"],
    "What to time (with --peer: compute unless given).",
  )
  flags.DEFINE_enum(
    "peer",
    "none",
    ["none", "hf"],
    "Also time the same-size Hugging Face PyTorch model (compute mode; module docstring).",
  )
  flags.DEFINE_bool("peer_compile", False, "Run the peer under torch.compile.")
  flags.DEFINE_integer("peer_rounds", 3, "Alternating rounds of --steps steps per side.")
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=cli.flags_parser(__doc__))
