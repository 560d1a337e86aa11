"""AOB's Celery app publishes through kombu's Redis transport with one client per pool
(aob_project/broker.py), and stays a plain ``redis://`` broker to everything that reads its URL."""

from kombu.transport import redis as kombu_redis

from aob_project.broker import Channel, Transport
from aob_project.celery import app


def test_the_redis_scheme_resolves_to_the_pooled_client_transport() -> None:
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert connection.as_uri().startswith("redis://")  # Flower and logs read this


def test_publishes_share_one_client_and_reach_the_queue() -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        assert channel._create_client() is channel._create_client()
        assert channel._create_client(asynchronous=True) is not channel._create_client()
        queue = "aob.test.transport"
        channel.queue_declare(queue)
        channel.queue_purge(queue)
        channel.basic_publish(channel.prepare_message("hello"), exchange="", routing_key=queue)
        channel.basic_publish(channel.prepare_message("again"), exchange="", routing_key=queue)
        assert channel._size(queue) == 2
        channel.queue_purge(queue)


def test_a_new_pool_gets_a_new_client() -> None:
    """After a reconnect kombu replaces the channel's pool; the shared client follows it."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        first = channel._create_client()
        channel._pool = None  # what kombu does when it drops a broken connection
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        assert isinstance(second, kombu_redis.redis.Redis)
