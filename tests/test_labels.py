from __future__ import annotations

import pytest

from edge_squeeze.errors import EdgeSqueezeError
from edge_squeeze.labels import imagenet_labels, load_labels, parse_labels


def test_plain_names():
    labels = parse_labels(["cat", "dog", ""])
    assert labels.names == ["cat", "dog"]
    assert labels.ids is None


def test_synset_words_form_keeps_wnid_as_id():
    labels = parse_labels(["n01440764 tench, Tinca tinca", "n02111889 Samoyed, Samoyede"])
    assert labels.ids == ["n01440764", "n02111889"]
    assert labels.names == ["tench", "Samoyed"]
    assert labels.index_of_id()["n02111889"] == 1


def test_shipped_imagenet_labels():
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels.names[258] == "Samoyed"
    assert labels.ids[0] == "n01440764"


def test_shipped_labels_match_the_shared_synsets(shared):
    ours = imagenet_labels()
    theirs = load_labels(shared.synset_words)
    assert ours.ids == theirs.ids


def test_empty_or_missing_labels_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(EdgeSqueezeError, match="empty"):
        load_labels(empty)
    with pytest.raises(EdgeSqueezeError, match="not found"):
        load_labels(tmp_path / "nope.txt")
