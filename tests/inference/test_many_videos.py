"""vidtx.inference.many_videos: token features only where the model returns them."""

import reference
import shared
from test_predict import checkpoint_dir, converted  # noqa: F401

from vidtx import models
from vidtx.checkpoints import store
from vidtx.inference import many_videos


def test_token_features_only_where_the_model_returns_them(converted):  # noqa: F811
  assert many_videos.token_features_available(converted)  # TimeSformer: 'encoded_tokens'.
  model_config = shared.tiny_model_config("vivit", "spatio_temporal")
  model = models.build("vivit", model_config, 4)
  vivit = store.Converted(
    model_name="vivit",
    model_config=model_config,
    num_classes=4,
    params=reference.init_shapes(model, (1, 4, 16, 16, 3)),  # Shapes are enough.
    preprocessing=dict(converted.preprocessing, crop_size=16),
  )
  assert not many_videos.token_features_available(vivit)
