"""X-MOD in plain PyTorch: configuration, layer maths, the v4.37.2 model classes and checkpoint IO."""

from .configuration import XMOD_LANGUAGES_81, XmodConfig
from .heads import (
    XmodForCausalLM,
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
    XmodModel,
    XmodPreTrainedModel,
)

__all__ = [
    "XMOD_LANGUAGES_81",
    "XmodConfig",
    "XmodForCausalLM",
    "XmodForMaskedLM",
    "XmodForMultipleChoice",
    "XmodForQuestionAnswering",
    "XmodForSequenceClassification",
    "XmodForTokenClassification",
    "XmodModel",
    "XmodPreTrainedModel",
]
