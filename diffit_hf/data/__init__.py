from .cache_encode import encode_dataset, encode_to_cache, finalize_cache
from .cache_format import read_cache_index
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from .imagenet import imagenet_id2label
from .images import center_crop_resize, image_transform, load_image_dataset, load_image_tensors, preprocess_image
from .latent_cache import LatentDataset, load_cache_vae
from .training_data import TrainingData, load_training_data

__all__ = [
    "FASHION_MNIST_CLASSES",
    "LatentDataset",
    "TrainingData",
    "encode_dataset",
    "encode_to_cache",
    "finalize_cache",
    "center_crop_resize",
    "image_transform",
    "imagenet_id2label",
    "load_fashion_mnist",
    "load_image_dataset",
    "load_cache_vae",
    "load_image_tensors",
    "load_training_data",
    "preprocess_image",
    "read_cache_index",
    "read_idx",
]
