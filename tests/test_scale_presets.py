"""The presets for pre-training at scale compose into what docs/scale.md promises."""

from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy

from tests.test_configs import compose
from xmod_lab.models.modeling import XmodLayer


def test_fsdp_preset_shards_per_xmod_layer(tmp_path):
    """trainer=fsdp builds Lightning's FSDPStrategy with one unit (and activation checkpoint) per XmodLayer.
    Lightning runs FSDP on GPUs only: the training itself cannot be exercised on this CPU machine."""
    cfg = compose(tmp_path, "trainer=fsdp", "data=mlm_pretrain", "model=large_prenorm")
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy) and cfg.trainer.precision == "bf16-mixed"
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {XmodLayer}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {XmodLayer}
    assert strategy.kwargs["use_orig_params"] is True  # frozen and trainable parameters in one unit
    assert cfg.data.global_batch_tokens == 524288 and cfg.data.alpha == 0.3 and cfg.data.max_length == 512
