"""vidtx.data.shard_tables: a split written to shards reports its progress (bad videos counted)
through the reporter."""

from ml_collections import config_flags  # noqa: F401  (registers the config file loader)

from vidtx.data import shard_tables, sources


def test_make_shards_reports_through_the_reporter(tmp_path, capsys):
  items = [sources.Item(path="", labels=("walk",), video_id=v) for v in ("a", "b", "c")]
  summary = shard_tables.write_split(items, str(tmp_path / "out"), "train", num_shards=1)
  assert summary["bad"] == 3
  last = capsys.readouterr().err.splitlines()[-1].split("\r")[-1]
  assert last.startswith("train: 3/3 videos | 3 bad | ") and last.endswith(" | ETA 0m00s")
