"""The status patch the operator sends: a merge patch that also removes what is gone."""

from kubetune.k8s.api import merge_patch_to


def test_keys_the_new_status_lost_are_nulled_at_every_depth() -> None:
    old = {"bestTrial": {"number": 1, "params": {"optimizer": "sgd", "momentum": 0.9}}, "x": 1}
    new = {"bestTrial": {"number": 4, "params": {"optimizer": "adamw"}}}
    assert merge_patch_to(old, new) == {
        "bestTrial": {"number": 4, "params": {"optimizer": "adamw", "momentum": None}},
        "x": None,
    }


def test_lists_and_scalars_are_replaced_whole() -> None:
    assert merge_patch_to({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": 5}) == {"a": [3], "b": 5}
    assert merge_patch_to(None, {"a": 1}) == {"a": 1}
