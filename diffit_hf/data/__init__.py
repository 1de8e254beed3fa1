from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from .images import center_crop_resize, image_transform, load_image_dataset, preprocess_image

__all__ = [
    "FASHION_MNIST_CLASSES",
    "center_crop_resize",
    "image_transform",
    "load_fashion_mnist",
    "load_image_dataset",
    "preprocess_image",
    "read_idx",
]
