from berth.gateway.routes import RoutingTable, Target


def test_resolve_exact_prefix_and_missing() -> None:
    table = RoutingTable()
    table.upsert("iris", "/iris", 10)
    table.upsert("deep", "/models/deep", 10)
    assert table.resolve("/iris")[1] == "/"
    assert table.resolve("/iris/")[1] == "/"
    assert table.resolve("/iris/v2/health/ready") == (table.by_api["iris"], "/v2/health/ready")
    assert table.resolve("/models/deep")[0] is table.by_api["deep"]
    assert table.resolve("/irises") == (None, "/irises")
    assert table.resolve("/models")[0] is None


def test_endpoint_change_moves_the_route() -> None:
    table = RoutingTable()
    route = table.upsert("a", "/a", 10)
    assert table.upsert("a", "/b", 5) is route
    assert table.resolve("/a")[0] is None
    assert route.max_replica_concurrency == 5


def test_set_targets_keeps_existing_upstreams_and_retires_removed_ones() -> None:
    route = RoutingTable().upsert("a", "/a", 2)
    one, two = Target("r1", "/s/1"), Target("r2", "/s/2")
    route.set_targets([one, two])
    first = route.upstreams[0]
    first.in_flight = 3
    removed = route.set_targets([two, Target("r2", "/s/3")])
    assert [u.target for u in removed] == [one]
    assert removed[0] is first and first.retired and first.in_flight == 3
    assert route.ready_replicas == 1


def test_pick_excludes_tried_upstreams() -> None:
    route = RoutingTable().upsert("a", "/a", 2)
    route.set_targets([Target("r1", "/1"), Target("r2", "/2")])
    first = route.pick()
    second = route.pick(exclude=[first])
    assert second is not None and second is not first
    assert route.pick(exclude=route.upstreams) is None


def test_admission_scales_with_ready_replicas() -> None:
    route = RoutingTable().upsert("a", "/a", 2)
    assert not route.admits()
    route.set_targets([Target("r1", "/1"), Target("r1", "/1b"), Target("r2", "/2")])
    route.in_flight = 3
    assert route.admits()
    route.in_flight = 4
    assert not route.admits()
