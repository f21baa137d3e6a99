"""One LightningModule per X-MOD head; what they share is plain functions in `common`."""

from xmod_lab.tasks.language_modeling import CausalLMTask, MaskedLMTask
from xmod_lab.tasks.multiple_choice import MultipleChoiceTask
from xmod_lab.tasks.question_answering import QuestionAnsweringTask
from xmod_lab.tasks.sequence_classification import SequenceClassificationTask
from xmod_lab.tasks.token_classification import TokenClassificationTask

__all__ = [
    "CausalLMTask",
    "MaskedLMTask",
    "MultipleChoiceTask",
    "QuestionAnsweringTask",
    "SequenceClassificationTask",
    "TokenClassificationTask",
]
