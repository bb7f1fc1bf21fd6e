"""ConvBERT for PyTorch: the six model classes of Hugging Face's API on the canonical checkpoint layout, and
``ConvBertForPreTraining`` (replaced-token detection)."""

from convbert_common.config import ConvBertConfig
from convbert_common.tokenizer import ConvBertTokenizer, ConvBertTokenizerFast
from convbert_common.version import __version__
from convbert_pt.export import export_onnx
from convbert_pt.gemm import gemm_backend, set_gemm_backend
from convbert_pt.modeling import (
    ConvBertForMaskedLM,
    ConvBertForMultipleChoice,
    ConvBertForQuestionAnswering,
    ConvBertForSequenceClassification,
    ConvBertForTokenClassification,
    ConvBertModel,
    ConvBertPreTrainedModel,
)
from convbert_pt.pipelines import pipeline
from convbert_pt.pretraining import ConvBertForPreTraining
from convbert_pt.sdconv import span_dynamic_conv

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
    "export_onnx",
    "gemm_backend",
    "ConvBertTokenizer",
    "ConvBertTokenizerFast",
    "__version__",
    "pipeline",
    "set_gemm_backend",
    "span_dynamic_conv",
]
