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

    def resize_token_embeddings(self, *args: Any, **kwargs: Any) -> nn.Embedding:
        """transformers' resize; the LM head's output bias then follows the resized decoder bias."""
        embeddings = super().resize_token_embeddings(*args, **kwargs)
        head = getattr(self, "lm_head", None)
        if head is not None:
            head.bias = head.decoder.bias  # one bias parameter, as at construction
        return embeddings

    # ----------------------------------------------------------------------- IO
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        """transformers' save_pretrained; a config transformers cannot rebuild is noted in config.json."""
        note_transformers_incompatibilities(self.config)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def _load_pretrained_model(cls, model, state_dict, checkpoint_files, load_config, *args, **kwargs):
        # The one hook between "files resolved, model built" and "weights copied": refuse a checkpoint
        # that does not fit (languages, adapters, shapes) with our message before transformers would
        # silently initialise the missing weights.
        check_checkpoint_fits(model, state_dict, checkpoint_files, load_config.ignore_mismatched_sizes)
        return super()._load_pretrained_model(model, state_dict, checkpoint_files, load_config, *args, **kwargs)
