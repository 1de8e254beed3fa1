"""Class labels of `DiffiTPipeline`: names (with comma-separated synonyms, case-insensitive) and ids -> class ids.

Shipped as remote code inside the pushed `pipeline_diffit.py` (`diffit_hf.pipelines.remote_code`).
"""

from __future__ import annotations

import numbers

import torch


def label_table(id2label: dict[int, str], num_classes: int) -> dict[str, int]:
    """Lower-cased name or synonym -> class id, from `id2label` (`{id: "name, synonym, ..."}`); a `ValueError` for
    an id outside `[0, num_classes)` or a name given to two ids."""
    for key in id2label:
        if not 0 <= key < max(num_classes, 1):
            raise ValueError(f"id2label has id {key}, outside the model's classes [0, {num_classes - 1}].")
    table = {}
    for key, value in id2label.items():
        for name in value.split(","):
            name = name.strip().lower()
            if table.get(name, key) != key:
                raise ValueError(
                    f"id2label gives the name {name!r} to ids {table[name]} and {key}; class names and "
                    "their comma-separated synonyms must be unique (case-insensitive)."
                )
            table[name] = key
    return table


def label_ids(names: str | list[str], table: dict[str, int], id2label: dict[int, str]) -> list[int]:
    """Class ids for class names (case-insensitive) through `table` (`label_table`); a single string is one name."""
    if isinstance(names, str):
        names = [names]
    if not table:
        raise ValueError("This pipeline has no id2label mapping; pass integer class ids instead of names.")
    ids = []
    for name in names:
        key = name.strip().lower()
        if key not in table:
            valid = ", ".join(sorted(id2label[i] for i in sorted(id2label)))
            raise ValueError(f"Unknown class name {name!r}; valid names are: {valid}.")
        ids.append(table[key])
    return ids


def resolve_labels(
    class_labels, num_classes: int, table: dict[str, int], id2label: dict[int, str]
) -> list[int] | None:
    """Class ids in `[0, num_classes)` from ids and names (`int`, `str`, a list of them or a tensor of ids), or
    `None` for an unconditional model (`num_classes=0`); a `ValueError` naming the first bad label."""
    if num_classes == 0:
        if class_labels is not None:
            raise ValueError("This model is unconditional (num_classes=0); pass class_labels=None.")
        return None
    if class_labels is None:
        raise ValueError(f"Pass class_labels (ids in [0, {num_classes - 1}] or names) for this model.")
    if isinstance(class_labels, (numbers.Number, str)) or torch.is_tensor(class_labels) and class_labels.ndim == 0:
        class_labels = [class_labels]
    class_labels = list(class_labels.tolist() if torch.is_tensor(class_labels) else class_labels)
    if not class_labels:
        raise ValueError("class_labels is empty.")
    ids = []
    for label in class_labels:
        label = label.item() if torch.is_tensor(label) else label
        if isinstance(label, str):
            ids += label_ids(label, table, id2label)
        elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
            ids.append(int(label))
        else:  # int() would truncate 2.7 to 2 and read True as 1
            raise ValueError(
                f"class_labels must hold integer class ids or class names, got {label!r} ({type(label).__name__})."
            )
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad:
        raise ValueError(f"Label ids {bad} are outside [0, {num_classes - 1}].")
    return ids
