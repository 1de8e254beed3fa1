from .checks import gaussian_blur, score_image_set, shifted_labels
from .classifier import FashionClassifier
from .extractors import (
    ClassifierFeatures,
    FeatureExtractor,
    InceptionFeatures,
    in_batches,
    load_extractor,
    quantize,
    to_uint8,
)
from .metrics import (
    class_consistency,
    feature_stats,
    few_samples_warning,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_reference_stats,
    precision_recall,
    trace_sqrt_product,
)

__all__ = [
    "ClassifierFeatures",
    "FashionClassifier",
    "FeatureExtractor",
    "InceptionFeatures",
    "class_consistency",
    "feature_stats",
    "few_samples_warning",
    "frechet_distance",
    "gaussian_blur",
    "in_batches",
    "inception_score",
    "kernel_inception_distance",
    "load_extractor",
    "load_reference_stats",
    "precision_recall",
    "quantize",
    "score_image_set",
    "shifted_labels",
    "to_uint8",
    "trace_sqrt_product",
]
