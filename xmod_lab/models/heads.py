"""The public model classes: the base class, the bare XmodModel and the six task heads of the v4.37.2 API.

Every class takes an ``XmodConfig``; head classes hold the encoder as ``self.roberta`` so state-dict
keys match transformers' (``roberta.encoder.layer.0...``, ``lm_head.*``, ``classifier.*``, ``qa_outputs.*``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import XmodConfig
from .modeling import (
    XmodEmbeddings,
    XmodEncoder,
    XmodPooler,
    route_languages,
)
from .outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    ModelOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

logger = logging.getLogger(__name__)

_SKIP_INIT = [False]  # set by loading.skip_init(): weights are about to be overwritten by a checkpoint


def _output(out: ModelOutput, return_dict: bool) -> ModelOutput | tuple:
    return out if return_dict else out.to_tuple()


class XmodPreTrainedModel(nn.Module):
    """Base class: weight init (RoBERTa's), languages, freezing, checkpoint IO, gradient checkpointing."""

    config_class = XmodConfig
    base_model_prefix = "roberta"

    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        if not isinstance(config, XmodConfig):
            raise TypeError(f"config must be an xmod_lab XmodConfig, got {type(config).__name__}")
        config.validate()
        self.config = config

    # ----------------------------------------------------------------- structure
    @property
    def base_model(self) -> XmodModel:
        return getattr(self, self.base_model_prefix, self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.base_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.base_model.embeddings.word_embeddings = value
        self.tie_weights()

    def tie_weights(self) -> None:
        """Tie the MLM decoder to the word embeddings (tie_word_embeddings) and to lm_head.bias."""
        head = getattr(self, "lm_head", None)
        if head is None:
            return
        if self.config.tie_word_embeddings:
            head.decoder.weight = self.base_model.embeddings.word_embeddings.weight
        head.decoder.bias = head.bias

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Grow or shrink the vocabulary; kept rows are copied, new rows initialised as at construction.

        The MLM decoder and its bias follow (tied decoders stay tied); ``config.vocab_size`` is updated.
        """
        old = self.get_input_embeddings()
        if new_num_tokens == old.num_embeddings:
            return old
        new = nn.Embedding(new_num_tokens, old.embedding_dim, padding_idx=old.padding_idx)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        self._init_weights(new)
        keep = min(new_num_tokens, old.num_embeddings)
        with torch.no_grad():
            new.weight[:keep] = old.weight[:keep]
        new.weight.requires_grad_(old.weight.requires_grad)
        self.base_model.embeddings.word_embeddings = new
        head = getattr(self, "lm_head", None)
        if head is not None:
            bias = torch.zeros(new_num_tokens, device=head.bias.device, dtype=head.bias.dtype)
            bias[:keep] = head.bias.detach()[:keep]
            head.bias = nn.Parameter(bias)
            if not self.config.tie_word_embeddings:
                decoder = nn.Linear(old.embedding_dim, new_num_tokens).to(
                    device=old.weight.device, dtype=old.weight.dtype
                )
                self._init_weights(decoder)
                with torch.no_grad():
                    decoder.weight[:keep] = head.decoder.weight[:keep]
                head.decoder = decoder
            else:
                head.decoder.out_features = new_num_tokens
        self.config.vocab_size = new_num_tokens
        self.tie_weights()
        return new

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, XmodLMHead):
            module.bias.zero_()

    def post_init(self) -> None:
        """Initialise weights (skipped while from_pretrained builds the model) and tie the LM head.

        A sub-model (``self.roberta``) initialised itself in its own constructor and is not redone.
        """
        if not _SKIP_INIT[0]:
            for child in self.children():
                if not isinstance(child, XmodPreTrainedModel):
                    child.apply(self._init_weights)
        self.tie_weights()

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
        from .adapters import add_language

        return add_language(self, code, init_from=init_from)

    def remove_languages(self, codes: str | Iterable[str]) -> dict[str, tuple[int, int]]:
        """Drop these languages' adapters (e.g. to prune a checkpoint before adding languages)."""
        from .adapters import remove_languages

        return remove_languages(self, codes)  # a single code string is accepted too

    # ------------------------------------------------------- gradient checkpointing
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each layer in the backward pass (less memory); kwargs go to torch.utils.checkpoint."""
        encoder = self.base_model.encoder
        encoder.gradient_checkpointing = True
        encoder.checkpoint_kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}

    def gradient_checkpointing_disable(self) -> None:
        self.base_model.encoder.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.base_model.encoder.gradient_checkpointing

    # ----------------------------------------------------------------------- IO
    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write config.json + model.safetensors, loadable by transformers' Xmod classes too."""
        from .loading import save_pretrained

        return save_pretrained(self, save_directory)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        config: XmodConfig | None = None,
        dtype: torch.dtype | None = None,
        ignore_mismatched_sizes: bool = False,
        revision: str | None = None,
        **config_overrides: Any,
    ):
        """Load from a local directory or a Hugging Face hub id (snapshot_download; works offline from cache).

        Keyword arguments other than the named ones override config fields (e.g. ``num_labels=3``,
        ``default_language="de_DE"``, ``hidden_dropout_prob=0.0``).
        """
        from .loading import load_pretrained

        return load_pretrained(
            cls,
            name_or_path,
            config=config,
            dtype=dtype,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            revision=revision,
            **config_overrides,
        )


class XmodModel(XmodPreTrainedModel):
    """The bare X-MOD encoder (or decoder, with ``is_decoder``/``add_cross_attention``)."""

    def __init__(self, config: XmodConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = XmodEmbeddings(config)
        self.encoder = XmodEncoder(config)
        self.pooler = XmodPooler(config) if add_pooling_layer else None
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: tuple[tuple[torch.Tensor, ...], ...] | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPoolingAndCrossAttentions | tuple:
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = cfg.return_dict if return_dict is None else return_dict
        use_cache = (cfg.use_cache if use_cache is None else use_cache) if cfg.is_decoder else False

        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        shape_source = input_ids if input_ids is not None else inputs_embeds
        if shape_source.dim() != (2 if input_ids is not None else 3):
            raise ValueError(
                f"input_ids must be (batch, tokens) and inputs_embeds (batch, tokens, hidden); got "
                f"shape {tuple(shape_source.shape)}"
            )
        batch, length = shape_source.shape[:2]
        device = shape_source.device
        if past_key_values is not None and not isinstance(past_key_values, tuple | list):
            raise TypeError(
                "past_key_values must be the tuple of per-layer (key, value, ...) tuples this model returned"
            )
        past_length = past_key_values[0][0].shape[2] if past_key_values else 0

        longest = past_length + length + (cfg.pad_token_id or 0) + 1  # highest RoBERTa position + 1
        if position_ids is None and longest > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence too long: {past_length + length} tokens, but positions stop at "
                f"max_position_embeddings={cfg.max_position_embeddings} (RoBERTa positions start at "
                f"pad_token_id + 1); truncate to {cfg.max_position_embeddings - (cfg.pad_token_id or 0) - 1} tokens"
            )
        bad_token_types = None
        if token_type_ids is not None:
            bad_token_types = ((token_type_ids < 0) | (token_type_ids >= cfg.type_vocab_size)).any()
        routing, bad = route_languages(cfg, lang_ids, batch, device, also_check=bad_token_types)
        if bad:
            raise ValueError(
                f"token_type_ids must be in 0..{cfg.type_vocab_size - 1} (config.type_vocab_size="
                f"{cfg.type_vocab_size}); got values up to {int(token_type_ids.max())}. X-MOD/XLM-R checkpoints "
                "have one token type: drop token_type_ids (or pass zeros)"
            )

        x = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, past_length)  # (B, T, D)
        dtype = _compute_dtype(x)
        mask = self._self_attention_mask(attention_mask, batch, length, past_length, device, dtype)
        encoder_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_mask = _additive_mask(_expand_mask(encoder_attention_mask, batch), dtype)
        head_mask = self._head_mask(head_mask, dtype)

        enc = self.encoder(
            x,
            routing,
            mask=mask,
            head_mask=head_mask,
            encoder_states=encoder_hidden_states,
            encoder_mask=encoder_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        pooled = self.pooler(enc.last_hidden_state) if self.pooler is not None else None
        out = BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=enc.last_hidden_state,
            pooler_output=pooled,
            hidden_states=enc.hidden_states,
            past_key_values=enc.past_key_values,
            attentions=enc.attentions,
            cross_attentions=enc.cross_attentions,
        )
        return _output(out, return_dict)

    def _self_attention_mask(self, attention_mask, batch, length, past_length, device, dtype):
        total = past_length + length
        if attention_mask is not None:
            if attention_mask.dim() == 2 and attention_mask.shape != (batch, total):
                raise ValueError(
                    f"attention_mask must have shape (batch, past + tokens) = ({batch}, {total}), "
                    f"got {tuple(attention_mask.shape)}"
                )
            allowed = _expand_mask(attention_mask.to(device), batch)  # (B, 1, 1|T, S) bool
        else:
            allowed = None
        if self.config.is_decoder:
            rows = torch.arange(past_length, total, device=device).view(-1, 1)
            causal = torch.arange(total, device=device).view(1, -1) <= rows  # (T, S)
            allowed = causal.view(1, 1, length, total) if allowed is None else allowed & causal
        return None if allowed is None else _additive_mask(allowed, dtype)

    def _head_mask(self, head_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        if head_mask is None:
            return None
        layers, heads = self.config.num_hidden_layers, self.config.num_attention_heads
        if head_mask.shape == (heads,):
            head_mask = head_mask.expand(layers, heads)
        if head_mask.shape != (layers, heads):
            raise ValueError(
                f"head_mask must have shape (num_heads,) = ({heads},) or (num_layers, num_heads) = "
                f"({layers}, {heads}), got {tuple(head_mask.shape)}"
            )
        return head_mask.to(dtype).view(layers, 1, heads, 1, 1)  # per layer (1, H, 1, 1)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention scores will have (the autocast dtype when autocast is on)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _expand_mask(mask: torch.Tensor, batch: int) -> torch.Tensor:
    """(B, S) or (B, T, S) 0/1 mask -> broadcastable (B, 1, 1|T, S) boolean 'may attend'."""
    if mask.dim() == 2:
        mask = mask[:, None, None, :]
    elif mask.dim() == 3:
        mask = mask[:, None, :, :]
    else:
        raise ValueError(
            f"attention masks must be (batch, keys) or (batch, queries, keys), got {tuple(mask.shape)}"
        )
    if mask.shape[0] != batch:
        raise ValueError(f"attention mask batch size {mask.shape[0]} does not match the inputs' {batch}")
    return mask.bool() if mask.dtype == torch.bool else mask != 0


def _additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # The dtype's lowest finite value, not -inf, so a fully masked row stays finite (as in transformers).
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


# ---------------------------------------------------------------------------------------- heads
class XmodLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder (tied to the word embeddings) + bias."""

    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(x))))  # (B, T, V)


class XmodClassificationHead(nn.Module):
    """Sentence classifier on the <s> token: dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, config: XmodConfig) -> None:
        super().__init__()
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(p)
        self.out_proj = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x[:, 0])  # (B, D)
        return self.out_proj(self.dropout(torch.tanh(self.dense(x))))  # (B, num_labels)


_ENCODER_ARGS = ("attention_mask", "token_type_ids", "position_ids", "head_mask", "inputs_embeds")


class XmodForMaskedLM(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        if config.is_decoder:
            logger.warning("XmodForMaskedLM wants bidirectional attention: set config.is_decoder=False")
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.lm_head = XmodLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        masked_logits_only: bool = False,
    ) -> MaskedLMOutput | tuple:
        """``labels`` (B, T): token ids to predict, -100 where no loss is taken.

        ``masked_logits_only`` (with ``labels``; an xmod-lab extension): run the LM head only on the
        positions that have a target, as fairseq's pre-training does, and return those (N, V) logits.
        Same loss; at vocabulary 250k the head is most of a base step's FLOPs and ~15% of tokens are
        masked. Costs one host sync (the number of masked tokens).
        """
        out = self.roberta(
            input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            head_mask=head_mask,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        if masked_logits_only:
            if labels is None:
                raise ValueError(
                    "masked_logits_only=True needs labels (it keeps the positions where labels != -100)"
                )
            labels = labels.to(out.last_hidden_state.device)
            keep = labels != -100  # (B, T)
            logits = self.lm_head(out.last_hidden_state[keep])  # (N, V)
            loss = F.cross_entropy(logits.float(), labels[keep])
        else:
            logits = self.lm_head(out.last_hidden_state)
            loss = None
        if labels is not None and not masked_logits_only:
            loss = F.cross_entropy(
                logits.view(-1, logits.shape[-1]).float(), labels.to(logits.device).reshape(-1)
            )
        result = MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return _output(result, self.config.return_dict if return_dict is None else return_dict)


class XmodForCausalLM(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        if not config.is_decoder:
            logger.warning(
                "XmodForCausalLM without is_decoder=True attends to future tokens; set is_decoder=True"
            )
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.lm_head = XmodLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: tuple[tuple[torch.Tensor, ...], ...] | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        """``labels`` (B, T): the inputs themselves; shifted here, -100 where no loss is taken."""
        if labels is not None:
            use_cache = False
        out = self.roberta(
            input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            head_mask=head_mask,
            inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(out.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # position t predicts token t+1
            loss = F.cross_entropy(shifted, labels[:, 1:].to(logits.device).reshape(-1))
        result = CausalLMOutputWithCrossAttentions(
            loss=loss,
            logits=logits,
            past_key_values=out.past_key_values,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )
        return _output(result, self.config.return_dict if return_dict is None else return_dict)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 20,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Greedy or sampled continuation with the KV cache; returns (B, T + new) token ids.

        Prompts may be left-padded (give ``attention_mask``); rows that produced ``eos_token_id``
        continue with ``pad_token_id``.
        """
        from .generation import generate

        return generate(
            self,
            input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            generator=generator,
        )


class XmodForSequenceClassification(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.classifier = XmodClassificationHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """``labels``: (B,) class ids, (B,) floats when num_labels == 1 (regression), or (B, num_labels)
        0/1 floats for multi-label (``problem_type`` decides; inferred from num_labels and dtype if unset)."""
        out = self.roberta(
            input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            head_mask=head_mask,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(out.last_hidden_state)  # (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        result = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return _output(result, self.config.return_dict if return_dict is None else return_dict)


def sequence_classification_loss(
    config: XmodConfig, logits: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """transformers' rule: MSE for regression, cross-entropy for class ids, BCE-with-logits for multi-label."""
    num_labels = logits.shape[-1]
    labels = labels.to(logits.device)
    problem = config.problem_type
    if problem is None:
        if num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    logits = logits.float()
    if problem == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.reshape(-1).long())
    if labels.shape != logits.shape:
        raise ValueError(
            f"multi-label labels must have shape (batch, num_labels) = {tuple(logits.shape)}, got "
            f"{tuple(labels.shape)}; for single-label class ids pass a LongTensor"
        )
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class XmodForTokenClassification(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = XmodModel(config, add_pooling_layer=False)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        """``labels`` (B, T): tag ids, -100 on sub-words and special tokens that take no loss."""
        out = self.roberta(
            input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            head_mask=head_mask,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.view(-1, self.num_labels).float(), labels.to(logits.device).reshape(-1)
            )
        result = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return _output(result, self.config.return_dict if return_dict is None else return_dict)


class XmodForQuestionAnswering(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(
                f"XmodForQuestionAnswering predicts span start and end: it needs num_labels=2, got {config.num_labels}"
            )
        self.num_labels = config.num_labels
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> QuestionAnsweringModelOutput | tuple:
        """``start_positions``/``end_positions`` (B,): token indices; positions past the input take no loss."""
        out = self.roberta(
            input_ids,
            lang_ids=lang_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            head_mask=head_mask,
            inputs_embeds=inputs_embeds,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = (
            t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1)
        )  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start_logits.shape[1]  # clamped out-of-input positions are ignored
            start = start_positions.to(logits.device).reshape(-1).clamp(0, ignored)
            end = end_positions.to(logits.device).reshape(-1).clamp(0, ignored)
            loss = (
                F.cross_entropy(start_logits.float(), start, ignore_index=ignored)
                + F.cross_entropy(end_logits.float(), end, ignore_index=ignored)
            ) / 2
        result = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return _output(result, self.config.return_dict if return_dict is None else return_dict)


class XmodForMultipleChoice(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        self.roberta = XmodModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        lang_ids: torch.Tensor | int | None = None,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MultipleChoiceModelOutput | tuple:
        """Inputs are (B, C, T). ``lang_ids`` (B,) routes every choice to its example's adapter;
        (B, C) or (B*C,) per choice also work. ``labels`` (B,): index of the right choice."""
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None:
            raise ValueError("Pass exactly one of input_ids or inputs_embeds")
        batch, choices = source.shape[:2]

        def flat(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.reshape(batch * choices, *t.shape[2:])

        out = self.roberta(
            flat(input_ids),
            lang_ids=_choice_lang_ids(lang_ids, batch, choices),
            attention_mask=flat(attention_mask),
            token_type_ids=flat(token_type_ids),
            position_ids=flat(position_ids),
            head_mask=head_mask,
            inputs_embeds=flat(inputs_embeds),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(batch, choices)  # (B, C)
        loss = (
            None if labels is None else F.cross_entropy(logits.float(), labels.to(logits.device).reshape(-1))
        )
        result = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return _output(result, self.config.return_dict if return_dict is None else return_dict)


def _choice_lang_ids(lang_ids, batch: int, choices: int):
    """(B,) -> (B*C,) with each example's id repeated for its choices; (B, C) flattened; others as given."""
    if not isinstance(lang_ids, torch.Tensor) or lang_ids.dim() == 0:
        return lang_ids
    if lang_ids.dim() == 2 and lang_ids.shape == (batch, choices):
        return lang_ids.reshape(-1)
    if lang_ids.dim() == 1 and lang_ids.shape[0] == batch and batch != batch * choices:
        return lang_ids.repeat_interleave(choices)
    if lang_ids.dim() == 1 and lang_ids.shape[0] in (1, batch * choices):
        return lang_ids
    raise ValueError(
        f"lang_ids for multiple choice must have shape (batch,) = ({batch},), (batch, num_choices) = "
        f"({batch}, {choices}) or (batch * num_choices,) = ({batch * choices},); got {tuple(lang_ids.shape)}"
    )
