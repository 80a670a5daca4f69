r"""Trains a video transformer (vidtx.trainer); resumes from the newest checkpoint in --workdir.

  python train.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400

The same as vidtx-train; from Python: vidtx.trainer.train_and_evaluate(config, workdir).
"""

from vidtx import cli  # Parses the flags before vidtx.trainer (JAX, TensorFlow) is imported.

if __name__ == "__main__":
  cli.train()
