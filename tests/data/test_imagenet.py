"""The ImageNet-1k class names shipped with the package, as converted pipelines use them."""

from diffusers import DDPMScheduler

from diffit_hf import DiffiTModel, DiffiTPipeline
from diffit_hf.data import imagenet_id2label


def test_imagenet_names_count_and_known_indices():
    names = imagenet_id2label()
    assert sorted(names) == list(range(1000))
    assert names[0].startswith("tench")
    assert names[1].startswith("goldfish")
    assert names[207] == "golden retriever"
    assert names[281].startswith("tabby")
    assert names[999].startswith("toilet tissue")
    assert all(name.strip() for name in names.values())


def test_imagenet_names_resolve_in_a_pipeline():
    # every synonym names one class, so a 1000-class pipeline accepts the table; names resolve case-insensitively
    model = DiffiTModel(sample_size=4, patch_size=2, num_layers=1, num_attention_heads=1, attention_head_dim=8)
    pipe = DiffiTPipeline(transformer=model, scheduler=DDPMScheduler(), id2label=imagenet_id2label())
    assert pipe.get_label_ids(["Golden Retriever", "tench", "Tinca tinca"]) == [207, 0, 0]
    # names shared by two classes were disambiguated: the bird and the machine
    assert pipe.get_label_ids(["crane (bird)", "crane (machine)", "partridge"]) == [134, 517, 86]
