"""A user's fine-tune end to end: class folders of videos -> shards (python -m
vidtx.data.make_shards --source=folders) -> configs/finetune.py with a converted image ViT as init
(a tiny random Hugging Face ViT) -> training and evaluation (train.py's train_and_evaluate) -> the
run exported (vidtx.convert) -> vidtx.predict on one of the videos."""

import json
import os

import numpy as np
import pytest

from vidtx import convert, predict, trainer
from vidtx.checkpoints import convert_source, store
from vidtx.configs import finetune
from vidtx.data import make_shards
from vidtx.inference import preprocess

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

# Each class a colour, so that a few steps can tell them apart; labels.txt sorts the folders.
COLOURS = {"blue": (30, 50, 210), "green": (40, 190, 60), "red": (210, 40, 40)}
CLASSES = sorted(COLOURS)
VIDEOS_PER_CLASS = 4  # --val_fraction 0.1 of 4 draws 1 per class: 9 train, 3 validation videos.
FRAMES, HEIGHT, WIDTH = 8, 36, 48
# The tiny ViT: 32 x 32 images in 16 x 16 patches, width 32, 2 layers of 2 heads, MLP 64; the
# recipe follows it (init=).
VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def class_frames(colour, seed):
  """(FRAMES, HEIGHT, WIDTH, 3) uint8: the class colour with noise and a grey bar moving down."""
  rng = np.random.default_rng(seed)
  frames = np.asarray(colour, np.int32) + rng.integers(-25, 25, (FRAMES, HEIGHT, WIDTH, 3))
  for t in range(FRAMES):
    frames[t, 4 * t : 4 * t + 4] = 128
  return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("my_videos")
  for c, (name, colour) in enumerate(sorted(COLOURS.items())):
    os.makedirs(root / name)
    for i in range(VIDEOS_PER_CLASS):
      path = str(root / name / f"{name}_{i}.mp4")
      preprocess.encode_video(path, class_frames(colour, 10 * c + i), fps=10)
  return str(root)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
  """A random Hugging Face ViT (5 ImageNet-style classes) converted as vidtx.convert does."""
  torch.manual_seed(0)
  config = transformers.ViTConfig(image_size=32, patch_size=16, num_labels=5, **VIT)
  path = str(tmp_path_factory.mktemp("hf_vit"))
  transformers.ViTForImageClassification(config).eval().save_pretrained(path)
  return store.save(str(tmp_path_factory.mktemp("ckpt") / "vit"), convert_source(path))


@pytest.mark.slow  # About 15 s with a warm compilation cache, 22 s without.
@pytest.mark.tier2
def test_finetune_on_class_folders_then_predict(video_root, vit_dir, tmp_path, capsys):
  # 1. The shards, as the user makes them (the command's main, in this process).
  shards = str(tmp_path / "shards")
  make_shards.main(
    ["--source=folders", f"--input={video_root}", f"--output_dir={shards}", "--num_workers=1"]
  )
  printed = capsys.readouterr().out
  assert "configs/finetune.py:model=timesformer,data=" in printed

  # 2. The config: classes and split sizes from the shards, the ViT as init.
  config = finetune.get_config(f"data={shards},init={vit_dir},epochs=4,batch=3")
  dc = config.dataset_configs
  assert dc.num_classes == 3 and list(dc.class_names) == CLASSES
  assert dict(dc.examples_per_subset) == {"train": 9, "validation": 3}
  assert config.init_from.checkpoint_path == vit_dir
  vit = store.load(vit_dir)
  assert list(dc.mean) == vit.preprocessing["mean"] and list(dc.std) == vit.preprocessing["std"]
  assert config.model.layer_norm_epsilon == vit.model_config["layer_norm_epsilon"]
  # 9 videos in batches of 3: 3 steps an epoch, 12 steps, evaluated every epoch.
  assert config.eval_every_steps == config.lr_configs.warmup_steps == 3
  # The model and clips follow the ViT (read from its vidtx_model.json): 32 x 32 in 16 x 16
  # patches, the short side 37 (the recipe's 256 for 224), evaluated at 32.
  model = config.model
  assert (model.hidden_size, model.num_layers, model.num_heads, model.mlp_dim) == tuple(
    VIT.values()
  )
  assert model.variant == "B/16" and (dc.crop_size, dc.min_resize, dc.eval_min_resize) == (
    32,
    37,
    32,
  )
  assert "model follows init=" in capsys.readouterr().err
  # Overrides, as --config.x=v would set them: they win, with a note.
  dc.num_frames = 4  # Fewer frames than the recipe's 8.
  config.lr_configs.base_learning_rate = 0.01  # Tiny model, 12 steps: a rate that moves it.

  # 3. Train and evaluate.
  workdir = str(tmp_path / "run")
  results = trainer.train_and_evaluate(config, workdir)
  out = capsys.readouterr().out
  assert "init_from" in out and "image ViT" in out
  assert "dataset_configs.num_frames=4 (recipe: 8)" in out
  assert f"from init_from {vit_dir}, " in out and "from scratch" not in out
  assert results["num_videos"] == 3 and results["views_per_video"] == 3
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  losses = [line["loss"] for line in lines if "loss" in line]
  evaluations = [line["step"] for line in lines if "val_top1" in line]
  assert len(losses) == 4 and np.all(np.isfinite(losses))  # A line every epoch (3 steps).
  assert evaluations == [3, 6, 9, 12]
  assert results["top1"] == 1.0  # Three colours: every validation video right.

  # 4. Export the run and predict a video with it, named by labels.txt's classes.
  ckpt = str(tmp_path / "mine")
  convert.convert(src=workdir, out=ckpt)
  exported = store.load(ckpt)
  assert exported.labels == CLASSES and exported.num_classes == 3
  video = os.path.join(video_root, "red", "red_0.mp4")
  logits = predict.run(ckpt, video=video, top_k=3)
  assert logits.shape == (3, 3)  # 1 clip x 3 crops, 3 classes.
  top = capsys.readouterr().out.split("top-3:\n")[1].splitlines()[0]
  assert top.split()[:2] == ["1.", "red"]
