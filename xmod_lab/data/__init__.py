"""Multilingual data: sources, tokenizers, collators, language-aware batch samplers and LightningDataModules.

| task | datamodule | config (conf/data) |
|---|---|---|
| XNLI, PAWS-X | SentencePairDataModule | xnli, pawsx, synthetic_nli (via synthetic_nli()) |
| PAN-X / WikiANN, UD-POS | TokenClassificationDataModule | panx, udpos |
| SQuAD, XQuAD, MLQA, TyDiQA-GoldP | QuestionAnsweringDataModule | squad_xquad, mlqa, tydiqa |
| XCOPA-style | MultipleChoiceDataModule | xcopa |
| MLM / CLM corpora | LanguageModelingDataModule | mlm_text, mlm_pretrain, synthetic_mlm |

All take ``source`` (+ optional ``eval_source``): a hub id with a per-language config or local files with a
``{lang}`` placeholder; ``languages``: the model's ``config.languages`` (``lang_ids`` index it);
``train_langs`` / ``eval_langs``: dataset codes mapped to X-MOD codes (``language_map`` over
:data:`DEFAULT_LANGUAGE_MAP`); ``batching``: mixed | sorted | homogeneous; the padded datamodules (all but
language modelling, whose blocks are full) also take ``group_by_length`` (training batches of similar
lengths) and ``sort_eval_by_length`` (evaluation batches longest first), None for the measured defaults in
``data/common.py``. After construction
each ``eval_langs`` code is an evaluation set with its own val/test dataloader, in that order
(``dm.spec.eval_adapters``: set -> the adapter that scores it); ``dm.spec`` (a ``DataSetup``) holds the shared
arguments as resolved (adapter indices, batch sizes, cache, limits). Batches: ``input_ids``, ``attention_mask``,
``lang_ids``, ``labels`` (+ QA ``start_positions``/``end_positions``, or the evaluation metadata ``example_id``,
``offset_mapping``, ``context``, ``answers``, ``answer_language`` to keep out of the model: :func:`model_inputs`).
The training data position is saved in checkpoints (``state_dict``, :class:`DataPosition`).
Call :func:`check_vocab_size` with the model's vocab_size.
"""

from xmod_lab.data.collate import IGNORE_INDEX, CausalLMCollator, MaskedLMCollator, PadCollator, model_inputs
from xmod_lab.data.language_modeling import LanguageModelingDataModule
from xmod_lab.data.languages import DEFAULT_LANGUAGE_MAP, language_ids, to_xmod_language
from xmod_lab.data.multiple_choice import MultipleChoiceDataModule
from xmod_lab.data.question_answering import QuestionAnsweringDataModule
from xmod_lab.data.sampling import (
    BATCHING_MODES,
    DataPosition,
    LanguageBatchSampler,
    ShardedEvalSampler,
    language_sampling_probs,
)
from xmod_lab.data.sentence_pair import SentencePairDataModule
from xmod_lab.data.sources import SourceSpec, load_split
from xmod_lab.data.synthetic import generate_synthetic, prepare_synthetic, synthetic_nli
from xmod_lab.data.token_classification import PANX_LABELS, UPOS_LABELS, TokenClassificationDataModule
from xmod_lab.data.tokenizer import XLMR_TOKENIZER, check_vocab_size, load_tokenizer, train_tokenizer

__all__ = [
    "BATCHING_MODES",
    "DataPosition",
    "DEFAULT_LANGUAGE_MAP",
    "IGNORE_INDEX",
    "XLMR_TOKENIZER",
    "CausalLMCollator",
    "LanguageBatchSampler",
    "LanguageModelingDataModule",
    "MaskedLMCollator",
    "MultipleChoiceDataModule",
    "PANX_LABELS",
    "PadCollator",
    "QuestionAnsweringDataModule",
    "SentencePairDataModule",
    "ShardedEvalSampler",
    "SourceSpec",
    "TokenClassificationDataModule",
    "UPOS_LABELS",
    "check_vocab_size",
    "generate_synthetic",
    "language_ids",
    "language_sampling_probs",
    "load_split",
    "load_tokenizer",
    "model_inputs",
    "prepare_synthetic",
    "synthetic_nli",
    "to_xmod_language",
    "train_tokenizer",
]
