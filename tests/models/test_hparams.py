"""vidtx.models.hparams: the default config and the named variants."""

import ml_collections

from vidtx import models
from vidtx.models import hparams


def test_default_config_and_variants():
  config = models.default_config("vivit")
  assert config.variant == "B/16x2" and config.temporal_layers == 4
  # Both models share the common fields; each adds its own.
  assert set(hparams.base_config()) < set(config)
  assert set(hparams.base_config()) < set(models.default_config("timesformer"))
  assert hparams.parse_variant("B/16x2") == dict(
    hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072, patch_size=16, tubelet_size=2
  )
  assert hparams.parse_variant("Ti/8")["tubelet_size"] == 1
  assert hparams.parse_variant("H/14")["mlp_dim"] == 5120
  # A ConfigDict of overrides works like a dict; omitted fields take their defaults.
  model = models.build("timesformer", ml_collections.ConfigDict(dict(variant="S/16")), 10)
  assert model.config.hidden_size == 384 and model.config.attention == "divided"
