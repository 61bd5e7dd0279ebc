"""router/storage/redis.py: ``redis+cluster://`` URLs make cluster clients; anything else one server's."""

from __future__ import annotations

import pytest

from router.settings import Settings, SettingsError
from router.storage.redis import (
    ClusterUrlError,
    Redis,
    RedisCluster,
    cluster_nodes,
    create_redis,
    is_cluster_url,
)


def test_cluster_url_names_its_seed_nodes() -> None:
    assert cluster_nodes("redis+cluster://10.0.0.5:6379") == [("10.0.0.5", 6379)]
    assert cluster_nodes("redis+cluster://a.example:7000,b.example:7001/0") == [("a.example", 7000),
                                                                              ("b.example", 7001)]
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1/0")


@pytest.mark.parametrize(("url", "says"), [
    ("redis+cluster://h:6379/2", "database 0 only"),
    ("redis+cluster://h:6379?ssl=true", "database 0 only"),
    ("redis+cluster://h", "'h' is not host:port"),
    ("redis+cluster://h:0", "'h:0' is not host:port"),
    ("redis+cluster://h:1,:2", "':2' is not host:port"),
])
def test_a_bad_cluster_url_names_the_problem_and_the_fix(url: str, says: str) -> None:
    with pytest.raises(ClusterUrlError, match="redis\\+cluster://host:port") as err:
        cluster_nodes(url)
    assert says in str(err.value)


async def test_a_cluster_url_makes_a_cluster_client_with_the_roles_timeouts() -> None:
    section = Settings.of(redis_url="redis+cluster://127.0.0.1:7000,127.0.0.1:7001").redis
    client = create_redis(section, role="collector")  # no connection yet
    assert isinstance(client, RedisCluster)
    assert {(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()} == {
        ("127.0.0.1", 7000), ("127.0.0.1", 7001)}
    assert client.connection_kwargs["socket_timeout"] == 0.5
    assert client.connection_kwargs["socket_connect_timeout"] == 0.5
    await client.aclose()
    single = create_redis(Settings.of(redis_url="redis://127.0.0.1:6379/0").redis, role="worker")
    assert isinstance(single, Redis)
    await single.aclose()


def test_settings_accept_a_cluster_url_and_refuse_other_schemes() -> None:
    assert Settings.of(redis_url="redis+cluster://10.0.0.5:6379").redis.url.startswith("redis+cluster://")
    with pytest.raises(SettingsError, match="redis\\+cluster://"):
        Settings.of(redis_url="cluster://10.0.0.5:6379")
