"""ConvBERT for Keras 3: the six model classes of Hugging Face's API on the canonical checkpoint layout.

The ``TFConvBert*`` names of Hugging Face's (Keras 2) TensorFlow classes are aliases of the same
classes. Importing this package never imports torch.
"""

from convbert_common.config import ConvBertConfig
from convbert_tf.io import canonical_variables, from_pretrained, save_pretrained
from convbert_tf.modeling import (
    ConvBertForMaskedLM,
    ConvBertForMultipleChoice,
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertForTokenClassification,
    ConvBertModel,
    ConvBertPreTrainedModel,
)
from convbert_tf.sdconv import span_dynamic_conv

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
    "from_pretrained",
    "save_pretrained",
    "span_dynamic_conv",
]
