r"""Multi-view evaluation of a run's newest checkpoint or of a converted one (vidtx.evaluate).

  python eval.py --config=configs/k400_vivit_fe.py --workdir=runs/k400_vivit_fe \
      --config.dataset_configs.base_dir=/data/k400

The same as vidtx-eval; from Python: vidtx.evaluate.evaluate(config, workdir, split).
"""

from vidtx import evaluate

if __name__ == "__main__":
  evaluate.run_cli()
