"""The test harness itself: what `make test` relies on from pytest and pytest-xdist."""

import pytest


@pytest.mark.xdist_group("harness")
def test_an_xdist_group_reaches_the_scheduler(request):
  # Under --dist loadgroup (make test) xdist tells its scheduler a test's group by suffixing the
  # node id with "@group"; when that is lost (pytest 9.2 with xdist 3.8) the groups of
  # test_url_io and test_gradient_norms split over the workers and build their fixtures twice.
  if not getattr(request.config.option, "loadgroup", False):
    pytest.skip("not run under --dist loadgroup")
  assert request.node.nodeid.endswith("@harness"), request.node.nodeid
