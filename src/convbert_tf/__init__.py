"""ConvBERT for Keras 3: the six model classes of Hugging Face's API on the canonical checkpoint layout.

The ``TFConvBert*`` names of Hugging Face's (Keras 2) TensorFlow classes are aliases of the same
classes. Importing this package never imports torch.
"""

from convbert_common import heads
from convbert_common.config import ConvBertConfig
from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast
from convbert_common.version import __version__
from convbert_tf import optimizers
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
from convbert_tf.pipelines import pipeline
from convbert_tf.pretraining import ConvBertForPreTraining
from convbert_tf.sdconv import span_dynamic_conv


def from_pretrained(pretrained_model_path, **kwargs):
    """The model class a checkpoint's ``config.json`` names (``ConvBertModel`` if none), loaded from it.

    Takes the keyword arguments of ``ConvBertPreTrainedModel.from_pretrained`` (Hub ids included).
    """
    config = kwargs.get("config")
    if not isinstance(config, ConvBertConfig):
        hub_options = {k: kwargs[k] for k in ("revision", "cache_dir", "local_files_only", "token", "subfolder")
                       if k in kwargs}
        config = ConvBertConfig.from_pretrained(config or pretrained_model_path, **hub_options)
    task = heads.of_architectures(config.architectures, source=str(pretrained_model_path)) or heads.MODEL
    if task is heads.PRETRAINING:
        return ConvBertForPreTraining.from_pretrained(pretrained_model_path, **kwargs)
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
    "ConvBertForPreTraining",
    "ConvBertForQuestionAnswering",
    "ConvBertForSequenceClassification",
    "ConvBertForTokenClassification",
    "ConvBertModel",
    "ConvBertPreTrainedModel",
    "ConvBertTokenizer",
    "ConvBertTokenizerFast",
    "TFConvBertForMaskedLM",
    "TFConvBertForMultipleChoice",
    "TFConvBertForQuestionAnswering",
    "TFConvBertForSequenceClassification",
    "TFConvBertForTokenClassification",
    "TFConvBertModel",
    "TFConvBertPreTrainedModel",
    "__version__",
    "pipeline",
    "canonical_variables",
    "export",
    "from_pretrained",
    "optimizers",
    "save_pretrained",
    "span_dynamic_conv",
]
