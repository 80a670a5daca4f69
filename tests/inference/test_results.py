"""vidtx.inference.results: feature file names are injective and fit a file system, whatever
the video's name."""

from vidtx.inference import results

ADVERSARIAL = [
  "a/b.mp4",
  "a__b.mp4",
  "a_b.mp4",
  "a b.mp4",
  "a:b.mp4",
  "vidéo 名前 🎬.mp4",
  "x" * 240 + ".mp4",
  "y/" * 60 + "deep.mp4",
  "..mp4",
  "a\udcffb.mp4",  # A non-UTF-8 byte, as Linux hands it to Python.
]


def test_feature_names_are_injective_and_fit_a_file_system():
  names = [
    results.feature_name(number, video_id, window)
    for number, video_id in enumerate(ADVERSARIAL, 1)
    for window in (None, 0, 12)
  ]
  assert len(set(names)) == len(names)
  for name in names:
    assert "/" not in name and not name.startswith(".")
    assert len((name + ".tokens.npy").encode("utf-8")) <= 255
  assert results.feature_name(1, "a/b.mp4", None) == "000001_a__b.mp4"
  assert results.feature_name(2, "a__b.mp4", 3) == "000002_a__b.mp4__w00003"
