from .classifier import FashionClassifier
from .extractors import ClassifierFeatures, FeatureExtractor, InceptionFeatures, load_extractor
from .metrics import (
    class_consistency,
    feature_stats,
    frechet_distance,
    kernel_inception_distance,
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
    "frechet_distance",
    "kernel_inception_distance",
    "load_extractor",
    "precision_recall",
    "trace_sqrt_product",
]
