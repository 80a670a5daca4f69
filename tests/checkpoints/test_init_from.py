"""vidtx.checkpoints.init_from: an image ViT into ViViT Model 1 (central frame, inflated
kernel), and a patch size that does not fit."""

import flax
import jax
import numpy as np
import pytest
import reference
from test_surgery import PREPROCESSING, TINY, _flat

from vidtx import models
from vidtx.checkpoints import init_from, store
from vidtx.models import tokenizer

VIT_CONFIG = dict(TINY, num_layers=2, attention="space")


VIVIT_CONFIG = dict(
  variant="Ti/16x2",
  hidden_size=32,
  num_layers=2,
  num_heads=2,
  mlp_dim=64,
  attention="spatio_temporal",
  classifier="token",
)


@pytest.fixture(scope="module")
def image_vit() -> store.Converted:
  """A converted space-only TimeSformer (an image ViT: 16 x 16 patches of 32 x 32 images, a 2 x 2
  grid, class token, 3 classes), every parameter random."""
  model = models.build("timesformer", VIT_CONFIG, 3)
  params = reference.random_like(reference.init_shapes(model, (1, 1, 32, 32, 3)), seed=5)
  params = jax.tree.map(np.asarray, flax.core.unfreeze(params))
  return store.Converted(
    model_name="timesformer",
    model_config=dict(VIT_CONFIG),
    num_classes=3,
    params=params,
    preprocessing=dict(PREPROCESSING, num_frames=1),
  )


def _init_vivit(image_vit, variant="Ti/16x2", **init_config):
  model = models.build("vivit", dict(VIVIT_CONFIG, variant=variant), 5)
  fresh = model.init(jax.random.key(1), np.zeros((1, 4, 32, 32, 3), np.float32), train=False)
  fresh = jax.tree.map(np.asarray, flax.core.unfreeze(fresh["params"]))
  init_config = dict(
    dict(
      checkpoint_path="vit_dir",
      positional_embed_size_change="resize_tile",
      kernel_init_method="central_frame",
    ),
    **init_config,
  )
  params, report = init_from.initialise(
    fresh,
    model_name="vivit",
    model_config=model.config,
    init_config=init_config,
    num_frames=4,
    crop_size=32,
    source=image_vit,
  )
  return _flat(fresh), _flat(params), report


def test_init_from_image_vit_into_vivit_model_1(image_vit):
  vit = _flat(image_vit.params)
  fresh, got, report = _init_vivit(image_vit, skip_patterns=["encoder/encoderblock_0/.*"])
  assert sorted(got) == sorted(fresh)
  for name in got:
    assert got[name].shape == fresh[name].shape and got[name].dtype == fresh[name].dtype, name

  # Tubelet kernel by Eq. 9: the 2D kernel at frame 1 of 2, zeros at frame 0.
  want_kernel = np.asarray(tokenizer.kernel_from_2d(vit["embedding/kernel"], 2, "central_frame"))
  np.testing.assert_array_equal(got["embedding/kernel"], want_kernel)
  np.testing.assert_array_equal(got["embedding/kernel"][0], 0)
  np.testing.assert_array_equal(got["embedding/kernel"][1], vit["embedding/kernel"])
  np.testing.assert_array_equal(got["embedding/bias"], vit["embedding/bias"])
  np.testing.assert_array_equal(got["cls"], vit["cls"])

  # [class entry, the 4 patch entries for temporal index 0, the same for index 1].
  vit_posemb = vit["pos_embedding/embedding"]
  assert vit_posemb.shape == (5, 32) and got["pos_embedding/embedding"].shape == (9, 32)
  np.testing.assert_array_equal(
    got["pos_embedding/embedding"], np.concatenate([vit_posemb[:1], vit_posemb[1:], vit_posemb[1:]])
  )

  # Block 0 skipped by pattern: exactly the fresh initialisation, and reported.
  skipped = sorted(k for k in fresh if k.startswith("encoder/encoderblock_0/"))
  assert skipped and sorted(report.skipped) == skipped
  for name in skipped:
    np.testing.assert_array_equal(got[name], fresh[name], err_msg=name)
    assert not np.array_equal(
      got[name],
      vit[
        name.replace("encoder/", "")
        .replace("/norm_attention/", "/norm_spatial/")
        .replace("/attention/", "/attention_spatial/")
      ],
    )

  # Block 1 and the final norm from the ViT's (norm_spatial -> norm_attention, ...).
  ours_to_theirs = {
    "norm_attention": "norm_spatial",
    "attention": "attention_spatial",
    "norm_mlp": "norm_mlp",
    "mlp": "mlp",
  }
  block_1 = [k for k in got if k.startswith("encoder/encoderblock_1/")]
  assert len(block_1) == len(skipped)
  for name in block_1:
    ours = name.split("/")[2]
    theirs = name.replace("encoder/", "", 1).replace(f"/{ours}/", f"/{ours_to_theirs[ours]}/")
    np.testing.assert_array_equal(got[name], vit[theirs], err_msg=name)
  for leaf in ("scale", "bias"):
    np.testing.assert_array_equal(got[f"encoder/encoder_norm/{leaf}"], vit[f"encoder_norm/{leaf}"])

  # A head for 5 classes from a 3-class ViT: fresh, with a note.
  for leaf in ("kernel", "bias"):
    np.testing.assert_array_equal(got[f"head/{leaf}"], fresh[f"head/{leaf}"])
  assert {"head/kernel", "head/bias"} <= set(report.fresh)
  assert any("head re-initialised" in note and "3 classes" in note for note in report.notes)
  assert any("central_frame" in note for note in report.notes)
  assert {"embedding/kernel", "pos_embedding/embedding"} <= set(report.adapted)
  assert set(report.loaded) == set(got) - set(report.skipped) - set(report.fresh)


def test_init_from_image_vit_inflate_kernel(image_vit):
  vit = _flat(image_vit.params)
  _, got, _ = _init_vivit(image_vit, kernel_init_method="inflate")
  for t in range(2):
    np.testing.assert_allclose(got["embedding/kernel"][t], vit["embedding/kernel"] / 2, rtol=1e-6)


def test_init_from_image_vit_rejects_another_patch_size(image_vit):
  with pytest.raises(ValueError, match="16x16 patches, the model 8x8"):
    _init_vivit(image_vit, variant="Ti/8x2")
