"""ConvBERT for Keras 3: the six model classes of Hugging Face's API on the canonical checkpoint layout.

The ``TFConvBert*`` names of Hugging Face's (Keras 2) TensorFlow classes are aliases of the same
classes. Importing this package never imports torch.
"""

from convbert_common import heads
from convbert_common.config import ConvBertConfig
from convbert_tf.export import export
from convbert_tf.io import canonical_variables, save_pretrained
from convbert_tf.modeling import (
    MODEL_CLASSES,
    ConvBertForMaskedLM,
    ConvBertForMultipleChoice,
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertForTokenClassification,
    ConvBertModel,
    ConvBertPreTrainedModel,
)
from convbert_tf.sdconv import span_dynamic_conv


def from_pretrained(pretrained_model_path, **kwargs):
    """The model class a checkpoint's ``config.json`` names (``ConvBertModel`` if none), loaded from it."""
    config = ConvBertConfig.from_pretrained(pretrained_model_path)
    task = heads.of_architectures(config.architectures, source=str(pretrained_model_path)) or heads.MODEL
    return MODEL_CLASSES[task.name].from_pretrained(pretrained_model_path, **kwargs)


TFConvBertModel = ConvBertModel
TFConvBertForMaskedLM = ConvBertForMaskedLM
TFConvBertForSequenceClassification = ConvBertForSequenceClassification
TFConvBertForMultipleChoice = ConvBertForMultipleChoice
TFConvBertForTokenClassification = ConvBertForTokenClassification
TFConvBertForQuestionAnswering = ConvBertForQuestionAnswering
TFConvBertPreTrainedModel = ConvBertPreTrainedModel

__all__ = [
    "ConvBertConfig",
    "ConvBertForMaskedLM",
    "ConvBertForMultipleChoice",
    "ConvBertForQuestionAnswering",
    "ConvBertForSequenceClassification",
    "ConvBertForTokenClassification",
    "ConvBertModel",
    "ConvBertPreTrainedModel",
    "TFConvBertForMaskedLM",
    "TFConvBertForMultipleChoice",
    "TFConvBertForQuestionAnswering",
    "TFConvBertForSequenceClassification",
    "TFConvBertForTokenClassification",
    "TFConvBertModel",
    "TFConvBertPreTrainedModel",
    "canonical_variables",
    "export",
    "from_pretrained",
    "save_pretrained",
    "span_dynamic_conv",
]
