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


def test_a_class_index_outside_the_labels_is_named_by_its_number():
    labels = parse_labels(["cat", "dog", "fox"])
    assert [labels.name(i) for i in (0, 1, 2)] == ["cat", "dog", "fox"]
    assert labels.name(3) == "class_3" and labels.name(-1) == "class_-1" and labels.name(7) == "class_7"


def test_ids_and_names_must_be_as_many():
    from edge_squeeze.labels import Labels

    for ids in (["n01440764"], ["n01440764", "n01443537", "n01484850"]):
        with pytest.raises(EdgeSqueezeError, match="differ in length"):
            Labels(names=["tench", "goldfish"], ids=ids)
    assert Labels(names=["tench"], ids=["n01440764"]).ids == ["n01440764"]


def test_labels_round_trip_through_a_dict_and_cannot_change():
    import dataclasses

    from edge_squeeze.labels import Labels

    with_ids = parse_labels(["n01440764 tench, Tinca tinca", "n02111889 Samoyed"])
    plain = parse_labels(["cat", "dog"])
    assert with_ids.to_dict() == {"names": ["tench", "Samoyed"], "ids": ["n01440764", "n02111889"]}
    assert plain.to_dict() == {"names": ["cat", "dog"], "ids": None}
    assert Labels.from_dict(with_ids.to_dict()) == with_ids and Labels.from_dict(plain.to_dict()) == plain
    assert Labels.numbered(3).names == ["class_0", "class_1", "class_2"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plain.names = ["x"]  # type: ignore[misc]


def test_synset_lines_with_many_words_and_a_wnid_alone():
    labels = parse_labels(["n01484850 great white shark, white shark, man-eater", "n01491361"])
    assert labels.names == ["great white shark", "n01491361"] and labels.ids == ["n01484850", "n01491361"]
    plain = parse_labels(["great white shark", "tiger shark"])  # not wnids: whole lines are names
    assert plain.names == ["great white shark", "tiger shark"] and plain.ids is None


def test_a_labels_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(EdgeSqueezeError, match="is not UTF-8 text"):
        load_labels(path)
