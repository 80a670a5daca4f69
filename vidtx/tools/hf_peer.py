r"""The Hugging Face PyTorch peer of `vidtx.tools.benchmark --peer hf`: the same-size TimeSformer
(TimesformerForVideoClassification) or ViViT Model 1 (VivitForVideoClassification), trained on
the same batch with the same dtype and optimizer class, timed on its own.

  python -m vidtx.tools.hf_peer SPEC            # warm up, time, print one JSON line
  python -m vidtx.tools.hf_peer --serve SPEC    # vidtx.tools.benchmark's: times on request

SPEC is a JSON object (the text itself, or @file) as vidtx.tools.benchmark.peer_spec writes it:
model ('timesformer' | 'vivit'), hf_config (the Hugging Face config's fields), batch_size,
num_frames, crop_size, dtype ('float32', or 'bfloat16': bf16 autocast over float32 parameters,
as vidtx's model.dtype), optimizer ({'name': 'sgd', lr, momentum, nesterov, weight_decay} or
{'name': 'adamw', lr, betas, eps, weight_decay}), no_decay (regexes of the parameter names
weight decay skips), max_grad_norm, label_smoothing, grad_accum_steps, ema_decay,
gradient_checkpointing, compile (torch.compile the model), warmup, steps, rounds, seed.

A training step does what vidtx's does: forward in training mode (dropout, drop path), softmax
cross-entropy (label smoothing) and accuracy, backward (over grad_accum_steps micro-batches), the
gradients' global norm (clipping them when max_grad_norm), the optimizer update (fused on CUDA)
and the EMA when ema_decay > 0. The forward pass is the evaluation one (eval mode, no autograd).
The device is CUDA when torch sees one, else the CPU. A timing covers `steps` steps and ends
when the last one has finished; the one-shot mode reports the median over `rounds` timings.

--serve protocol (what vidtx.tools.benchmark does): after building and warming up, one line
`hf_peer> {json}` (ready: the model's facts); then for each JSON line read on stdin,
{"op": "train" | "forward", "steps": n}, one line `hf_peer> {"seconds": s}`, and for
{"op": "summary"} the peak memory; it exits at the end of its input.

Imports only torch and transformers (no jax, no tensorflow), so the subprocess is light.
"""

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from vidtx.errors import UserError

PREFIX = "hf_peer> "  # Marks protocol lines among whatever else reaches stdout.

_MODELS = {
  "timesformer": ("TimesformerConfig", "TimesformerForVideoClassification"),
  "vivit": ("VivitConfig", "VivitForVideoClassification"),
}


def build_model(spec: dict[str, Any]) -> Any:
  """The Hugging Face model of `spec` (randomly initialised, on the CPU)."""
  import transformers

  if spec["model"] not in _MODELS:
    raise UserError(f"hf_peer: model={spec['model']!r}; expected one of {sorted(_MODELS)}.")
  config_name, model_name = _MODELS[spec["model"]]
  fields = dict(spec["hf_config"])
  drop_path_rate = fields.pop("drop_path_rate", None)
  config = getattr(transformers, config_name)(**fields)
  if drop_path_rate is not None:
    # TimesformerConfig declares drop_path_rate an int, and its strict validation refuses a
    # rate such as 0.1 (in the constructor and on assignment); the model reads it as a float.
    vars(config)["drop_path_rate"] = float(drop_path_rate)
  return getattr(transformers, model_name)(config)


def count_params(model: Any) -> int:
  return sum(p.numel() for p in model.parameters())


def _device() -> Any:
  import torch

  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: Any) -> None:
  import torch

  if device.type == "cuda":
    torch.cuda.synchronize(device)


class Peer:
  """The model, its optimizer and one random batch on the device; timed steps on request."""

  def __init__(self, spec: dict[str, Any]):
    import torch

    self.spec = spec
    torch.manual_seed(int(spec.get("seed", 0)))
    self.device = device = _device()
    self.model = build_model(spec).to(device)
    b, t, s = int(spec["batch_size"]), int(spec["num_frames"]), int(spec["crop_size"])
    classes = int(spec["hf_config"]["num_labels"])
    generator = torch.Generator().manual_seed(int(spec.get("seed", 0)))
    # Hugging Face video models take (B, T, C, H, W); vidtx (B, T, H, W, C).
    self.inputs = torch.randn((b, t, 3, s, s), generator=generator).to(device)
    self.labels = torch.randint(0, classes, (b,), generator=generator).to(device)
    self.accum = int(spec.get("grad_accum_steps") or 1)
    if b % self.accum:
      raise UserError(f"hf_peer: grad_accum_steps={self.accum} does not divide batch {b}.")
    if spec.get("gradient_checkpointing"):
      self.model.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False}
      )
    self.params = [p for p in self.model.parameters() if p.requires_grad]
    self.optimizer = self._optimizer()
    decay = float(spec.get("ema_decay") or 0.0)
    self.ema = [p.detach().clone() for p in self.params] if decay > 0 else None
    self.autocast = spec.get("dtype", "float32") == "bfloat16"
    if spec.get("compile"):
      self.model.compile()  # In place: parameter names and the optimizer stay as they are.

  def _optimizer(self) -> Any:
    import torch

    opt = dict(self.spec["optimizer"])
    name = opt.pop("name")
    weight_decay = float(opt.pop("weight_decay", 0.0) or 0.0)
    patterns = [re.compile(p) for p in self.spec.get("no_decay") or ()]
    decay, no_decay = [], []
    for pname, p in self.model.named_parameters():
      skip = weight_decay and any(r.search(pname) for r in patterns)
      (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
      groups.append({"params": no_decay, "weight_decay": 0.0})
    # The fused CUDA kernels are PyTorch's fastest optimizer steps; elsewhere its default.
    fused = {"fused": True} if self.device.type == "cuda" else {}
    if name == "sgd":
      return torch.optim.SGD(
        groups,
        lr=opt["lr"],
        momentum=opt.get("momentum", 0.0),
        nesterov=bool(opt.get("nesterov", False)),
        **fused,
      )
    if name == "adamw":
      return torch.optim.AdamW(
        groups,
        lr=opt["lr"],
        betas=tuple(opt.get("betas", (0.9, 0.999))),
        eps=opt.get("eps", 1e-8),
        **fused,
      )
    raise UserError(f"hf_peer: optimizer {name!r}; expected 'sgd' or 'adamw'.")

  def _logits(self, inputs: Any) -> Any:
    import torch

    with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
      return self.model(pixel_values=inputs).logits

  def train_step(self) -> Any:
    """One optimizer update on the batch; returns the loss (on the device)."""
    import torch
    import torch.nn.functional as F

    self.model.train()
    total, correct = 0.0, 0.0
    for inputs, labels in zip(
      self.inputs.chunk(self.accum), self.labels.chunk(self.accum), strict=True
    ):
      logits = self._logits(inputs).float()
      loss = F.cross_entropy(
        logits, labels, label_smoothing=float(self.spec.get("label_smoothing") or 0.0)
      )
      (loss / self.accum).backward()
      total = total + loss.detach() / self.accum
      # vidtx's step computes its accuracy metric too.
      correct = correct + (logits.detach().argmax(-1) == labels).float().mean() / self.accum
    grads = [p.grad for p in self.params if p.grad is not None]
    max_norm = float(self.spec.get("max_grad_norm") or 0.0)
    if max_norm:
      torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True)
    else:
      torch.nn.utils.get_total_norm(grads, foreach=True)  # vidtx logs the norm every step.
    self.optimizer.step()
    self.optimizer.zero_grad(set_to_none=True)
    if self.ema is not None:
      with torch.no_grad():
        torch._foreach_lerp_(self.ema, self.params, 1.0 - float(self.spec["ema_decay"]))
    return total

  def forward(self) -> Any:
    """The evaluation forward pass of the batch; returns the logits."""
    import torch

    self.model.eval()
    with torch.no_grad():
      return self._logits(self.inputs)

  def time(self, op: str, steps: int) -> float:
    """Seconds `steps` train steps or forward passes take, until the last one has finished."""
    fn: Callable[[], Any] = {"train": self.train_step, "forward": self.forward}[op]
    _sync(self.device)
    start = time.perf_counter()
    for _ in range(steps):
      out = fn()
    _sync(self.device)
    float(out.float().reshape(-1)[0])  # On the host, as vidtx's timing ends.
    return time.perf_counter() - start

  def facts(self) -> dict[str, Any]:
    import torch
    import transformers

    device = str(self.device)
    if self.device.type == "cuda":
      device += " " + torch.cuda.get_device_name(self.device)
    return {
      "model": type(self.model).__name__,
      "params": count_params(self.model),
      "device": device,
      "dtype": self.spec.get("dtype", "float32"),
      "compile": bool(self.spec.get("compile")),
      "optimizer": type(self.optimizer).__name__,
      "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
      "attention_type": getattr(self.model.config, "attention_type", None),
      "torch": torch.__version__,
      "transformers": transformers.__version__,
      "threads": torch.get_num_threads(),
    }

  def peak_memory_bytes(self) -> int | None:
    import torch

    if self.device.type == "cuda":
      return int(torch.cuda.max_memory_allocated(self.device))
    return None


def warm_up(peer: Peer, warmup: int) -> float:
  """Runs max(warmup, 1) train steps and forward passes (torch.compile compiles in the first);
  returns the seconds of the first train step."""
  first = peer.time("train", 1)
  for _ in range(max(warmup, 1) - 1):
    peer.time("train", 1)
  for _ in range(max(warmup, 1)):
    peer.time("forward", 1)
  return first


def run(spec: dict[str, Any]) -> dict[str, Any]:
  """One-shot: warm up, then `rounds` timings of `steps` train steps and forward passes."""
  start = time.perf_counter()
  peer = Peer(spec)
  first = warm_up(peer, int(spec.get("warmup", 2)))
  steps, rounds = int(spec.get("steps", 10)), int(spec.get("rounds", 3))
  train, forward = [], []
  for _ in range(rounds):
    train.append(peer.time("train", steps) / steps)
    forward.append(peer.time("forward", steps) / steps)
  return dict(
    peer.facts(),
    setup_seconds=time.perf_counter() - start,
    first_step_seconds=first,
    steps=steps,
    rounds=rounds,
    train_step_seconds=statistics.median(train),
    forward_seconds=statistics.median(forward),
    train_step_seconds_all=train,
    forward_seconds_all=forward,
    peak_memory_bytes=peer.peak_memory_bytes(),
  )


def serve(spec: dict[str, Any], stdin: Any = None, stdout: Any = None) -> None:
  """The --serve protocol (module docstring)."""
  stdin, stdout = stdin or sys.stdin, stdout or sys.stdout

  def reply(obj: dict[str, Any]) -> None:
    stdout.write(PREFIX + json.dumps(obj) + "\n")
    stdout.flush()

  start = time.perf_counter()
  peer = Peer(spec)
  first = warm_up(peer, int(spec.get("warmup", 2)))
  reply(
    dict(
      peer.facts(), ready=True, setup_seconds=time.perf_counter() - start, first_step_seconds=first
    )
  )
  for line in stdin:
    if not line.strip():
      continue
    request = json.loads(line)
    if request["op"] == "summary":
      reply({"peak_memory_bytes": peer.peak_memory_bytes()})
    else:
      reply({"seconds": peer.time(request["op"], int(request["steps"]))})


def read_spec(text: str) -> dict[str, Any]:
  """SPEC from its JSON text or @path."""
  if text.startswith("@"):
    with open(text[1:]) as f:
      return json.load(f)
  return json.loads(text)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("spec", help="JSON object, or @file holding one (module docstring).")
  parser.add_argument("--serve", action="store_true", help="Time on request (stdin).")
  args = parser.parse_args(argv)
  try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
  except ImportError as e:
    print(
      f'hf_peer: {e}. The peer needs PyTorch and transformers: pip install -e ".[peer]".',
      file=sys.stderr,
    )
    return 2
  spec = read_spec(args.spec)
  if args.serve:
    serve(spec)
  else:
    print(json.dumps(run(spec)), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
