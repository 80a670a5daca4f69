"""Tests of vidtx.tools.attention_memory: the largest arrays read off HLO text, and a tiny joint
attention model whose gradient program keeps its (heads, L, L) attention arrays with 'xla' and
none with 'splash' (the Pallas kernel in interpret mode on this CPU)."""

import ml_collections
import pytest

from vidtx.tools import attention_memory


def test_largest_arrays_reads_hlo_types():
  hlo = (
    "%a = f32[2,3]{1,0} add(f32[2,3] %x, f32[2,3] %y)\n"
    "%b = bf16[4,8,8]{2,1,0} convert(f32[4,8,8] %z)\n"
    "%c = pred[] constant(true)\n"
    "%d = s32[16]{0} iota()\n"
  )
  sizes = dict(attention_memory.largest_arrays(hlo, count=4))
  assert list(sizes) == ["f32[4,8,8]", "bf16[4,8,8]", "s32[16]", "f32[2,3]"]
  assert sizes["f32[4,8,8]"] == 4 * 8 * 8 * 4 / 2**30
  assert sizes["bf16[4,8,8]"] == 4 * 8 * 8 * 2 / 2**30


@pytest.mark.slow
@pytest.mark.tier2
def test_splash_removes_the_attention_arrays():
  """ViViT Model 1 with 1 + 4 x 8 x 8 = 257 tokens and 2 heads: XLA's gradient program holds
  f32[..., 257, 257] logits or probabilities; the kernel's holds none."""
  config = ml_collections.ConfigDict(
    dict(
      model_name="vivit",
      model=dict(
        variant="Ti/8x2",
        hidden_size=16,
        num_heads=2,
        mlp_dim=32,
        num_layers=1,
        attention="spatio_temporal",
      ),
      dataset_configs=dict(num_frames=8, crop_size=64, num_classes=3),
    )
  )
  xla, splash = (attention_memory.gradient_memory(config, i) for i in ("xla", "splash"))
  assert xla["input_shape"] == splash["input_shape"] == [1, 8, 64, 64, 3]
  assert "257,257]" in xla["largest"][0][0]
  assert not any("257,257]" in name for name, _ in splash["largest"])
  assert splash["argument_gib"] == xla["argument_gib"]
  with pytest.raises(ValueError, match="attention_implementation='bogus'"):
    attention_memory.gradient_memory(config, "bogus")
