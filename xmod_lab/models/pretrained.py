"""XmodPreTrainedModel: transformers' ``PreTrainedModel`` with X-MOD's initialisation and languages.

Loading, saving, the hub, dtype/device_map, resizing embeddings, gradient checkpointing, PEFT and
``generate`` come from transformers. Ours: the language helpers, the checkpoint checks that run
before transformers copies any weight (checkpoint_checks.py), and the note ``save_pretrained``
writes when transformers could not rebuild the config.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from . import adapters
from .checkpoint_checks import check_checkpoint_fits
from .configuration import XmodConfig, note_transformers_incompatibilities


class XmodPreTrainedModel(PreTrainedModel):
    """Base class: RoBERTa's weight init, languages, freezing; everything else is transformers'."""

    config_class = XmodConfig
    base_model_prefix = "roberta"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # Buffers old transformers versions saved; recomputed here, never loaded.
    _keys_to_ignore_on_load_unexpected = [r"embeddings\.position_ids", r"embeddings\.token_type_ids"]

    def __init__(self, config: XmodConfig, *args: Any, **kwargs: Any) -> None:
        if not isinstance(config, XmodConfig):
            raise TypeError(f"config must be an xmod_lab XmodConfig, got {type(config).__name__}")
        config.check()
        super().__init__(config, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # Linear, Embedding, LayerNorm: N(0, initializer_range), 1, 0
        own = getattr(module, "_parameters", {})
        if not isinstance(module, nn.Linear | nn.Embedding | nn.LayerNorm) and own.get("bias") is not None:
            init.zeros_(module.bias)  # the LM head's free-standing output bias

    # ----------------------------------------------------------------- languages
    def set_default_language(self, language: str) -> None:
        """Use this language's adapter whenever ``lang_ids`` is not passed."""
        self.config.lang_id(language)  # raises, listing the known codes
        self.config.default_language = language

    def freeze_embeddings_and_language_adapters(self) -> None:
        """Freeze all embeddings, every language adapter and every adapter LayerNorm (paper's fine-tuning).

        ``output.LayerNorm`` stays trainable, as in fairseq and transformers.
        """
        model = self.base_model
        for p in model.embeddings.parameters():
            p.requires_grad = False
        for layer in model.encoder.layer:
            for p in layer.output.adapter_modules.parameters():
                p.requires_grad = False
            if layer.output.adapter_layer_norm is not None:
                for p in layer.output.adapter_layer_norm.parameters():
                    p.requires_grad = False

    def add_language(self, code: str, init_from: str | Sequence[str] | None = None) -> int:
        """Add a language adapter in every adapter layer (copy of one language, mean of several, or fresh)."""
        return adapters.add_language(self, code, init_from=init_from)

    def remove_languages(self, codes: str | Iterable[str]) -> dict[str, tuple[int, int]]:
        """Drop these languages' adapters (e.g. to prune a checkpoint before adding languages)."""
        return adapters.remove_languages(self, codes)

    def set_attn_implementation(self, attn_implementation: str | dict, allow_all_kernels: bool = False) -> None:
        """Switch every attention layer to "sdpa" or "eager" (same outputs; ``{"": name}`` as in
        transformers). Other names raise: transformers would accept e.g. "paged|eager" here and our
        layers would silently run SDPA."""
        if isinstance(attn_implementation, dict):
            attn_implementation = attn_implementation.get("", self.config._attn_implementation)
        self.config.attn_implementation = attn_implementation  # validates; layers read it at each call

    def tie_weights(self, missing_keys: set[str] | None = None, recompute_mapping: bool = True) -> None:
        """transformers' tying; the LM head keeps ONE output bias (``lm_head.bias`` is ``decoder.bias``) even
        with tie_word_embeddings=False, taken from whichever key the checkpoint has (``decoder.bias``, the one
        transformers computes with, when it has both). transformers 5 leaves an untied head's decoder.bias
        missing (zeros) when a file holds only lm_head.bias, as files written by xmod-lab and 4.x do."""
        super().tie_weights(missing_keys=missing_keys, recompute_mapping=recompute_mapping)
        head = getattr(self, "lm_head", None)
        if head is None:
            return
        if missing_keys is not None and "lm_head.decoder.bias" in missing_keys and "lm_head.bias" not in missing_keys:
            head.decoder.bias = head.bias
        else:
            head.bias = head.decoder.bias
        if missing_keys is not None and not {"lm_head.bias", "lm_head.decoder.bias"} <= missing_keys:
            missing_keys.difference_update({"lm_head.bias", "lm_head.decoder.bias"})

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> nn.Embedding:
        """transformers' resize; the LM head's output bias then follows the resized decoder bias."""
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        head = getattr(self, "lm_head", None)
        if head is not None:
            head.bias = head.decoder.bias  # one bias parameter, as at construction
        return embeddings

    def prune_heads(self, heads_to_prune: dict[int, list[int]]) -> None:
        """Remove self-attention heads for good: ``{layer: [head, ...]}``, heads numbered as in the unpruned
        layer. The v4.37.2 API; transformers 5 dropped it, so pruned files load in xmod-lab only."""
        total = self.config.num_attention_heads
        for layer_idx, heads in heads_to_prune.items():
            layer_idx, heads = int(layer_idx), {int(h) for h in heads}
            if not 0 <= layer_idx < self.config.num_hidden_layers or not heads <= set(range(total)):
                raise ValueError(
                    f"prune_heads got layer {layer_idx}, heads {sorted(heads)}; layers are "
                    f"0..{self.config.num_hidden_layers - 1} and heads 0..{total - 1}"
                )
            done = self.config.pruned_heads.get(layer_idx, [])
            current = [h for h in range(total) if h not in done]  # original numbers of the heads still there
            keep = [i for i, h in enumerate(current) if h not in heads]
            if not keep:
                raise ValueError(f"prune_heads would remove every head of layer {layer_idx}; keep at least one")
            attention = self.base_model.encoder.layer[layer_idx].attention
            width = attention.self.head_dim
            index = torch.cat([torch.arange(i * width, (i + 1) * width) for i in keep])
            for name in ("query", "key", "value"):
                setattr(attention.self, name, _keep_features(getattr(attention.self, name), index, dim=0))
            attention.output.dense = _keep_features(attention.output.dense, index, dim=1)
            attention.self.num_heads = len(keep)
            self.config.pruned_heads[layer_idx] = sorted(set(done) | heads)

    # ----------------------------------------------------------------------- IO
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """transformers' save_pretrained; a config transformers cannot rebuild is noted in config.json."""
        note_transformers_incompatibilities(self.config)
        head = getattr(self, "lm_head", None)
        if head is not None and not self.config.tie_word_embeddings and not args:
            # An untied head's file holds the bias under both names: transformers 5 reads decoder.bias, which
            # safetensors' de-duplication of the shared tensor would otherwise leave out.
            state_dict = kwargs.get("state_dict")
            state_dict = dict(self.state_dict() if state_dict is None else state_dict)
            if "lm_head.decoder.bias" in state_dict:
                state_dict["lm_head.decoder.bias"] = state_dict["lm_head.decoder.bias"].clone()
            kwargs["state_dict"] = state_dict
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _load_pretrained_model(cls, model, state_dict, checkpoint_files, load_config, *args, **kwargs):
        # The one hook between "files resolved, model built" and "weights copied": refuse a checkpoint
        # that does not fit (languages, adapters, shapes) with our message before transformers would
        # silently initialise the missing weights.
        check_checkpoint_fits(model, state_dict, checkpoint_files, load_config.ignore_mismatched_sizes)
        return super()._load_pretrained_model(model, state_dict, checkpoint_files, load_config, *args, **kwargs)


def _keep_features(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` with only the output (dim=0) or input (dim=1) features in ``index``."""
    index = index.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, index)
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, index))
    new.weight.requires_grad_(linear.weight.requires_grad)
    if linear.bias is not None:
        new.bias.requires_grad_(linear.bias.requires_grad)
    return new
