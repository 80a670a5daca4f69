"""vidtx.run_checkpoints: the run's own orbax checkpoints (the last N and the best, kept across
a resume), a workdir that is a URL."""

import pytest
from test_train_state import _tiny_state

from vidtx import run_checkpoints


def test_a_url_workdir_other_than_gcs_is_refused_before_anything_is_written(tmp_path, monkeypatch):
  # os.makedirs("s3://b/run") would silently make a local ./s3:/b/run. gs:// is kept in the
  # bucket (tests/integration/test_gcs_workdir.py).
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match=r"--workdir=s3://b/r: a URL.*gs://BUCKET"):
    run_checkpoints.checkpoint_manager("s3://b/r", read_only=True)
  assert list(tmp_path.iterdir()) == []
  run_checkpoints.check_workdir("gs://bucket/run")
  run_checkpoints.check_workdir(str(tmp_path / "run"))  # A path is fine.


def test_checkpoints_keep_the_last_n_and_the_best(tmp_path):
  _, _, _, state, _ = _tiny_state(ema=False)
  manager = run_checkpoints.checkpoint_manager(str(tmp_path), max_to_keep=1, best_metric="top1")
  for step, top1 in [(1, 0.5), (2, 0.9), (3, 0.1), (4, None), (5, 0.2)]:
    run_checkpoints.save(
      manager,
      step,
      state,
      {"positions": [[0, step]], "process_count": 1},
      metrics=None if top1 is None else {"top1": top1},
    )
  manager.wait_until_finished()
  assert sorted(manager.all_steps()) == [2, 5]  # The best (0.9) and the newest.
  assert run_checkpoints.restore_data_state(manager, 2)["positions"] == [[0, 2]]
  manager.close()
  # A resumed run (a new manager) still knows step 2 is the best: its next saves keep it.
  resumed = run_checkpoints.checkpoint_manager(str(tmp_path), max_to_keep=1, best_metric="top1")
  for step in (6, 7):
    run_checkpoints.save(resumed, step, state, {"positions": [[0, step]], "process_count": 1})
  resumed.wait_until_finished()
  assert sorted(resumed.all_steps()) == [2, 7]
  resumed.close()
