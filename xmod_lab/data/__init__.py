"""Multilingual data: sources, tokenizers, collators, language-aware batch samplers and LightningDataModules."""

from xmod_lab.data.collate import IGNORE_INDEX, CausalLMCollator, MaskedLMCollator, PadCollator, model_inputs
from xmod_lab.data.language_modeling import LanguageModelingDataModule
from xmod_lab.data.languages import DEFAULT_LANGUAGE_MAP, language_ids, to_xmod_language
from xmod_lab.data.multiple_choice import MultipleChoiceDataModule
from xmod_lab.data.question_answering import (
    QuestionAnsweringDataModule,
    postprocess_predictions,
    squad_scores,
)
from xmod_lab.data.sampling import (
    BATCHING_MODES,
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
    "postprocess_predictions",
    "prepare_synthetic",
    "squad_scores",
    "synthetic_nli",
    "to_xmod_language",
    "train_tokenizer",
]
