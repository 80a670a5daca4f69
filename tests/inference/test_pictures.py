"""vidtx.inference.pictures: the rollout picture shows every view."""

import numpy as np
from PIL import Image
from test_predict import MEAN, STD, checkpoint_dir, converted, moving_square, write_video  # noqa: F401

from vidtx import predict, rollout
from vidtx.inference import classifier, pictures, preprocess


def test_rollout_picture_shows_every_view(converted, checkpoint_dir, tmp_path):  # noqa: F811
  video = write_video(str(tmp_path / "clip.mp4"), moving_square(), "libx264")
  path = str(tmp_path / "rollout.png")
  logits = predict.run(checkpoint_dir, video=video, rollout_out=path, batch_size=4)
  _, view_logits = classifier.predict_video(converted, video)
  np.testing.assert_allclose(logits, view_logits, atol=1e-5)  # The same model call's logits.
  views = preprocess.video_views(preprocess.decode_video(video), converted)  # (6, 4, 32, 32, 3)
  _, heat = rollout.rollout(converted.build_model(), converted.params, views)
  expected = rollout.rollout_image(
    pictures.display_frames(views, converted.preprocessing), heat, ["x"] * 6
  )
  image = Image.open(path)
  # 6 views of 4 frames, 32-pixel frames enlarged 3 times: titles, frames, heat rows.
  assert image.size == expected.size == (4 * 96 + 3 * 4, 6 * (16 + 2 * 96 + 4) + 5 * 8)
  # Below the titles the pictures are exactly those of the views and their rollout.
  got, want = np.asarray(image), np.asarray(expected)
  for v in range(6):
    top = v * (16 + 2 * 96 + 4 + 8) + 16
    np.testing.assert_array_equal(got[top : top + 2 * 96 + 4], want[top : top + 2 * 96 + 4])
  # The first frame tile is the view's pixels, denormalised with the checkpoint's mean / std.
  pixels = np.clip(np.round((views[0, 0] * STD + MEAN) * 255), 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(got[16 : 16 + 96 : 3, 0:96:3], pixels)
  assert preprocess.view_names(converted.preprocessing)[:4] == [
    "clip 1, start crop",
    "clip 1, centre crop",
    "clip 1, end crop",
    "clip 2, start crop",
  ]
