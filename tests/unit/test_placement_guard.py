"""Another backend or region is refused at preview: the data volume cannot follow the host there."""
import pytest

from components.placement import _PlacementProvider

OLD = {"backend": "azure", "region": "norwayeast"}


@pytest.mark.parametrize("key, value", [("region", "norwaywest"), ("backend", "openstack")])
def test_a_move_the_volume_cannot_follow_fails_with_the_way_to_do_it(key, value):
    (failure,) = _PlacementProvider().check(OLD, {**OLD, key: value}).failures
    assert failure.property == key
    assert f"{OLD[key]!r} -> {value!r}" in failure.reason and "back up" in failure.reason and "restore" in failure.reason


def test_the_first_deploy_and_an_unchanged_placement_pass():
    assert _PlacementProvider().check({}, OLD).failures == []
    assert _PlacementProvider().check(OLD, dict(OLD)).failures == []
