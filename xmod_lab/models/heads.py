"""The task heads of the v4.37.2 API on the X-MOD backbone (modeling.py): forward and losses only.

Every class takes an ``XmodConfig``; head classes hold the encoder as ``self.roberta`` so state-dict
keys match transformers' (``roberta.encoder.layer.0...``, ``lm_head.*``, ``classifier.*``, ``qa_outputs.*``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration import XmodConfig
from .kernels import linear, onednn_applies, plain_linear
from .modeling import XmodModel
from .padding import Unpadded, labelled_positions, skipped_in_forward
from .pretrained import XmodPreTrainedModel

logger = logging.getLogger(__name__)

_LM_TIED = {"lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight", "lm_head.decoder.bias": "lm_head.bias"}


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
        return linear(self.decoder, self.layer_norm(F.gelu(linear(self.dense, x))))  # (B, T, V)


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


class XmodForMaskedLM(XmodPreTrainedModel):
    _tied_weights_keys = _LM_TIED

    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        if config.is_decoder:
            logger.warning("XmodForMaskedLM wants bidirectional attention: set config.is_decoder=False")
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.lm_head = XmodLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def _logits_at(self, hidden: torch.Tensor, kept: Unpadded) -> torch.Tensor:
        """(B, T, V) logits with the LM head run on the kept positions only. The backbone skipped the others
        (their hidden state is zero), so each of them gets the head's output for a zero state, computed once:
        the values of running the head on every position, at a fraction of the cost of a 250k-word head."""
        head = self.lm_head
        rows = kept.batch * kept.length
        if head._forward_hooks or head._forward_pre_hooks:
            return head(hidden)  # a hook on the head sees the (B, T, D) call it would see without skipping
        if not torch.is_grad_enabled() and onednn_applies(head.decoder, hidden) and kept.indices.shape[0] >= rows / 2:
            # The skipped positions hold zeros, so the head on every row gives these same logits. oneDNN runs the
            # decoder at about twice the speed of the addmm below on the CPU we measured (kernels.py): all rows
            # through it are faster unless more than half of them are padding.
            return head(hidden)
        filler = head(hidden.new_zeros(1, hidden.shape[-1]))  # (1, V)
        if torch.is_grad_enabled() or not plain_linear(head.decoder) or head.decoder.bias is None:
            # The module's own call: the addmm below would skip a LoRA or quantized decoder's own forward, or hooks.
            real = head(kept.unpad(hidden))  # (N, V)
            return filler.expand(rows, -1).index_copy(0, kept.indices, real).view(kept.batch, kept.length, -1)
        # Inference: no (N, V) buffer beside the (B * T, V) logits (transformers' peak memory is the logits):
        # the decoder writes each run of consecutive kept positions straight into its rows (a host copy of
        # the kept positions: one more sync on a GPU).
        states = head.layer_norm(F.gelu(linear(head.dense, kept.unpad(hidden))))  # (N, D)
        out = filler.expand(rows, -1).contiguous()
        flat, weight, start = kept.indices.tolist(), head.decoder.weight.t(), 0
        for i in range(1, len(flat) + 1):
            if i == len(flat) or flat[i] != flat[i - 1] + 1:
                torch.addmm(head.decoder.bias, states[start:i], weight, out=out[flat[start] : flat[i - 1] + 1])
                start = i
        return out.view(kept.batch, kept.length, -1)

    @can_return_tuple
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
        masked_logits_only: bool = False,
    ) -> MaskedLMOutput | tuple:
        """``labels`` (B, T): token ids to predict, -100 where no loss is taken.

        ``masked_logits_only`` (with ``labels``; an xmod-lab extension): run the LM head only on the
        positions that have a target, as fairseq's pre-training does, and return those (N, V) logits.
        Same loss; at vocabulary 250k the head is most of a base step's FLOPs and ~15% of tokens are
        masked. Costs one host sync (the number of masked tokens).
        """
        labelled = labelled_positions(labels)
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
            keep_positions=labelled,
            return_dict=True,
        )
        kept = None
        if not masked_logits_only:  # the backbone checked that exactly one of the two is given
            source = input_ids if input_ids is not None else inputs_embeds
            kept = skipped_in_forward(self.config, attention_mask, source, encoder_hidden_states, labelled)
        if masked_logits_only:
            if labels is None:
                raise ValueError(
                    "masked_logits_only=True needs labels (it keeps the positions where labels != -100)"
                )
            labels = labels.to(out.last_hidden_state.device)
            keep = labels != -100  # (B, T)
            logits = self.lm_head(out.last_hidden_state[keep])  # (N, V)
            loss = F.cross_entropy(logits.float(), labels[keep])
        elif kept is not None:
            logits = self._logits_at(out.last_hidden_state, kept)
            loss = None
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
        return result


class XmodForCausalLM(XmodPreTrainedModel, GenerationMixin):
    _tied_weights_keys = _LM_TIED

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

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", raise_if_both_names=True)  # as transformers
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
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        shift_labels: torch.Tensor | None = None,
    ) -> CausalLMOutputWithCrossAttentions | tuple:
        """``labels`` (B, T): the inputs themselves; shifted here, -100 where no loss is taken.
        ``shift_labels`` (B, T): targets already shifted (position t predicts ``shift_labels[:, t]``, e.g.
        from a sequence-parallel split); they replace ``labels`` for the loss, as in transformers, and
        also give a loss on their own (transformers then returns none)."""
        if labels is not None or shift_labels is not None:
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
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            keep_positions=labelled_positions(labels, shift=1),
            return_dict=True,
        )
        logits = self.lm_head(out.last_hidden_state)  # (B, T, V)
        loss = None
        if shift_labels is not None:
            if shift_labels.shape != logits.shape[:2]:
                raise ValueError(
                    f"shift_labels must have shape (batch, tokens) = {tuple(logits.shape[:2])}, one target per "
                    f"position, got {tuple(shift_labels.shape)}"
                )
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), shift_labels.to(logits.device).reshape(-1)
            )
        elif labels is not None:
            shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()  # position t predicts token t+1
            loss = F.cross_entropy(shifted, labels[:, 1:].to(logits.device).reshape(-1))
        result = CausalLMOutputWithCrossAttentions(
            loss=loss,
            logits=logits,
            cache=out.cache,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cross_attentions=out.cross_attentions,
        )
        return result

    def prepare_inputs_for_generation(self, input_ids, *args, attention_mask=None, **kwargs):
        """transformers' step inputs with RoBERTa positions from the mask: they start at pad_token_id + 1
        and count real tokens only, so a left-padded prompt continues exactly as the unpadded one
        (generate's own position_ids are 0-based, which is not what RoBERTa was trained with)."""
        if not self.config.is_decoder:
            raise ValueError("generate() needs a causal model: build it with XmodConfig(is_decoder=True)")
        inputs = super().prepare_inputs_for_generation(input_ids, *args, attention_mask=attention_mask, **kwargs)
        pad = self.config.pad_token_id
        mask = attention_mask if attention_mask is not None else (input_ids.ne(pad) if pad is not None else None)
        if mask is not None and mask.dim() == 2:
            mask = mask.long()
            positions = mask.cumsum(-1) * mask + (pad or 0)  # pads keep pad_token_id, as in XmodEmbeddings
            step = inputs["input_ids"] if inputs.get("input_ids") is not None else inputs["inputs_embeds"]
            inputs["position_ids"] = positions[:, -step.shape[1] :]
        return inputs


class XmodForSequenceClassification(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta = XmodModel(config, add_pooling_layer=False)
        self.classifier = XmodClassificationHead(config)
        self.post_init()

    @can_return_tuple
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
            first_token_only=True,  # the classifier reads <s> only
            return_dict=True,
        )
        logits = self.classifier(out.last_hidden_state)  # (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        result = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return result


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

    @can_return_tuple
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
            keep_positions=labelled_positions(labels),
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
        return result


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

    @can_return_tuple
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
    ) -> QuestionAnsweringModelOutput | tuple:
        """``start_positions``/``end_positions`` (B,): token indices; positions past the input take no loss."""
        # The span loss is a softmax over every position, padding included: all of them are computed.
        every = None
        if start_positions is not None and end_positions is not None and attention_mask is not None:
            every = torch.ones(attention_mask.shape, dtype=torch.bool, device=attention_mask.device)
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
            keep_positions=every,
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
        return result


class XmodForMultipleChoice(XmodPreTrainedModel):
    def __init__(self, config: XmodConfig) -> None:
        super().__init__(config)
        self.roberta = XmodModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
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
            first_token_only=True,  # the pooler reads <s> only
            return_dict=True,
        )
        logits = self.classifier(self.dropout(out.pooler_output)).view(batch, choices)  # (B, C)
        loss = (
            None if labels is None else F.cross_entropy(logits.float(), labels.to(logits.device).reshape(-1))
        )
        result = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return result


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
