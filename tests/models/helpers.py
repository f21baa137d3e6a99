"""Tiny configs, inputs and transformers twins shared by the model tests."""

from __future__ import annotations

import torch

from xmod_lab.models import XmodConfig

LANGS = ["en_XX", "de_DE", "fr_XX", "sw_KE"]
VOCAB = 99
PAD = 1
OUR_ONLY_KEYS = (
    "adapter_layers",
    "adapter_activation",
    "adapter_mode",
    "attn_implementation",
    "position_embedding_type",
)


def tiny_config(**overrides) -> XmodConfig:
    values = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        type_vocab_size=2,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        languages=LANGS,
        num_labels=3,
    )
    values.update(overrides)
    return XmodConfig(**values)


def hf_config(config: XmodConfig):
    """transformers' XmodConfig with the same values, eager attention (the oracle)."""
    import transformers

    values = {k: v for k, v in config.to_dict().items() if k not in OUR_ONLY_KEYS and k != "architectures"}
    hf = transformers.XmodConfig(**values)
    hf._attn_implementation = "eager"
    return hf


def hf_twin(model):
    """The transformers class of the same name, holding our model's exact weights."""
    import transformers

    twin = getattr(transformers, type(model).__name__)(hf_config(model.config))
    result = twin.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if "position_ids" not in k and "token_type_ids" not in k]
    assert not missing and not result.unexpected_keys, (missing, result.unexpected_keys)
    twin.train(model.training)
    return twin


def token_batch(batch: int = 4, length: int = 9, seed: int = 0, pad_rows: tuple[int, ...] = (1, 3)):
    """input_ids with <s>=0 first, some rows right-padded with PAD, and the matching attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    ids[:, 0] = 0
    for k, row in enumerate(pad_rows):
        if row < batch:
            ids[row, length - 2 - k :] = PAD
    return ids, ids.ne(PAD).long()


def at_real(x: torch.Tensor, mask: torch.Tensor | None, attention: bool = False) -> torch.Tensor:
    """Per-position outputs at the real tokens only, others as they are: with padding skipped
    (config.skip_padding) the outputs at padding positions are zeros, not transformers' values.
    ``attention``: x is (B, H, T, S) attention probabilities, whose query rows are the positions."""
    if mask is None or mask.dim() < 2:
        return x
    real = mask.reshape(-1, mask.shape[-1]).bool()
    if attention:
        x = x.transpose(1, 2)
    return x[real] if x.dim() >= 2 and x.shape[:2] == real.shape else x


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()
