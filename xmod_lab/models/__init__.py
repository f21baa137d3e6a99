"""X-MOD on transformers' base classes: the v4.37.2 API, with the research fields of xmod-lab.

configuration.py      XmodConfig (a transformers PretrainedConfig; same config.json), XMOD_LANGUAGES_81
pretrained.py         XmodPreTrainedModel (a transformers PreTrainedModel): init, languages, save note
modeling.py           the layer maths and the XmodModel backbone
inputs.py             what forward checks first: the once-per-forward language routing, input shapes, lengths
masks.py              attention and head masks (0/1 inputs -> additive float masks)
heads.py              the six task heads (forward + losses); XmodForCausalLM generates via GenerationMixin
checkpoint_checks.py  refuses a checkpoint whose languages/adapters/shapes do not fit, before loading
adapters.py, freezing.py, adapter_files.py: languages after pre-training, freezing policies,
per-language adapter files.
"""

import transformers

from ._versions import check_transformers_version

check_transformers_version()

from .configuration import XMOD_LANGUAGES_81, XmodConfig  # noqa: E402
from .heads import (  # noqa: E402
    XmodForCausalLM,
    XmodForMaskedLM,
    XmodForMultipleChoice,
    XmodForQuestionAnswering,
    XmodForSequenceClassification,
    XmodForTokenClassification,
)
from .modeling import XmodModel  # noqa: E402
from .pretrained import XmodPreTrainedModel  # noqa: E402

# The Auto classes build ours from our config (transformers' own XmodConfig keeps building theirs).
for _auto, _model_class in (
    (transformers.AutoModel, XmodModel),
    (transformers.AutoModelForMaskedLM, XmodForMaskedLM),
    (transformers.AutoModelForCausalLM, XmodForCausalLM),
    (transformers.AutoModelForSequenceClassification, XmodForSequenceClassification),
    (transformers.AutoModelForTokenClassification, XmodForTokenClassification),
    (transformers.AutoModelForQuestionAnswering, XmodForQuestionAnswering),
    (transformers.AutoModelForMultipleChoice, XmodForMultipleChoice),
):
    _auto.register(XmodConfig, _model_class, exist_ok=True)

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
