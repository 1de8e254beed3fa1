"""Writes diffit_hf/data/imagenet_classes.txt: the ImageNet-1k class names, one line per class id (0..999).

Source: timm's WordNet info files (Apache-2.0; `timm/data/_info/imagenet_synsets.txt` gives the class order, the
sorted WordNet ids, and `imagenet_synset_to_lemma.txt` their lemmas). timm is not a dependency: pass the folder of
an unpacked timm wheel (`pip download --no-deps timm && unzip timm-*.whl 'timm/data/_info/*'`).

    python scripts/make_imagenet_classes.py path/to/timm/data/_info

Each line holds a class's comma-separated synonyms (`DiffiTPipeline` accepts any of them). A synonym shared by
several classes stays only with the one class whose first (main) name it is ("partridge": 86, not the ruffed grouse
82), and is dropped from all of them when that is not a single class ("crane": the bird 134 and the machine 517);
the four classes left without a name get the disambiguated names in `DISAMBIGUATED`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "diffit_hf" / "data" / "imagenet_classes.txt"
# class id -> name, for the classes whose only lemma is shared with another class (WordNet glosses)
DISAMBIGUATED = {134: "crane (bird)", 474: "cardigan (sweater)", 517: "crane (machine)", 638: "maillot (tights)"}


def main(info: Path) -> None:
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    if len(synsets) != 1000 or synsets != sorted(synsets):
        raise ValueError(f"{info}: expected the 1000 sorted ImageNet-1k synsets, got {len(synsets)}.")
    names = [[x.strip() for x in lemmas[s].split(",")] for s in synsets]
    counts = Counter(x.lower() for synonyms in names for x in set(y.lower() for y in synonyms))
    first = Counter(synonyms[0].lower() for synonyms in names)
    lines = []
    for i, synonyms in enumerate(names):
        unique = [x for k, x in enumerate(synonyms)
                  if counts[x.lower()] == 1 or (k == 0 and first[x.lower()] == 1)]
        if not unique and i not in DISAMBIGUATED:
            raise ValueError(f"class {i} ({synsets[i]}) has no unique name; add one to DISAMBIGUATED.")
        lines.append(", ".join([DISAMBIGUATED[i]] + unique if i in DISAMBIGUATED else unique))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}: {len(lines)} classes")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
