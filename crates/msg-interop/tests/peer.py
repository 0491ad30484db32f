"""The other side of the interoperability tests: CloudEvents through each
broker with the official CloudEvents Python SDK and each broker's usual
Python client (confluent-kafka, redis-py, nats-py, pika).

    peer.py publish BROKER URL TOPIC   # one event, as the SDK and client write it
    peer.py consume BROKER URL TOPIC   # one event msg published, printed as JSON

The event published and the JSON printed are described in interop.rs.
"""

import asyncio
import json
import sys
import time
from urllib.parse import urlparse

from cloudevents.conversion import to_binary as http_to_binary
from cloudevents.http import CloudEvent, from_http
from cloudevents.kafka import KafkaMessage
from cloudevents.kafka import from_binary as kafka_from_binary
from cloudevents.kafka import to_binary as kafka_to_binary

TIMEOUT = 30


def event():
    return CloudEvent(
        {
            "type": "com.example.order.created",
            "source": "/python/orders",
            "id": "py-1",
            "subject": "order 1 \u2713",
            "time": "2026-12-02T10:00:00.25+01:00",
            "datacontenttype": "application/json",
            "region": "eu-west",
        },
        {"order": 1, "from": "python"},
    )


def show(ev):
    attributes = dict(ev.get_attributes())
    data = ev.get_data()
    if isinstance(data, (bytes, bytearray)):
        data = json.loads(data)
    print(json.dumps({"attributes": attributes, "data": data}, sort_keys=True))


def host_port(url):
    u = urlparse(url)
    return u.hostname, u.port


# ------------------------------------------------------------------ kafka

def kafka_publish(url, topic):
    from confluent_kafka import Producer

    host, port = host_port(url)
    producer = Producer({"bootstrap.servers": f"{host}:{port}"})
    message = kafka_to_binary(event())
    producer.produce(topic, value=message.value, key=message.key,
                     headers=list(message.headers.items()))
    if producer.flush(TIMEOUT) != 0:
        sys.exit("kafka: not delivered")


def kafka_consume(url, topic):
    from confluent_kafka import Consumer

    host, port = host_port(url)
    consumer = Consumer({
        "bootstrap.servers": f"{host}:{port}",
        "group.id": f"peer-{time.time_ns()}",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic])
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        record = consumer.poll(1.0)
        if record is None or record.error():
            continue
        headers = {k: v for k, v in (record.headers() or [])}
        show(kafka_from_binary(KafkaMessage(headers, record.key(), record.value())))
        consumer.close()
        return
    sys.exit("kafka: nothing arrived")


# ------------------------------------------------------------------ redis
# msg's layout of a stream entry: a field `h:<name>` per header, `payload`.

def redis_publish(url, topic):
    import redis

    headers, body = http_to_binary(event())
    fields = {f"h:{name}": value for name, value in headers.items()}
    fields["h:content-type"] = "application/json"
    fields["payload"] = body
    redis.Redis.from_url(url).xadd(topic, fields)


def redis_consume(url, topic):
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        entries = client.xrange(topic, count=1)
        if entries:
            _, fields = entries[0]
            headers = {k.decode()[2:]: v.decode() for k, v in fields.items()
                       if k.startswith(b"h:")}
            show(from_http(headers, fields[b"payload"]))
            return
        time.sleep(0.1)
    sys.exit("redis: nothing arrived")


# ------------------------------------------------------------------- nats

def nats_publish(url, topic):
    import nats

    async def run():
        nc = await nats.connect(url)
        headers, body = http_to_binary(event())
        headers["content-type"] = "application/json"
        await nc.publish(topic, body, headers=headers)
        await nc.flush()
        await nc.close()

    asyncio.run(run())


def nats_consume(url, topic):
    import nats

    async def run():
        nc = await nats.connect(url)
        sub = await nc.subscribe(topic)
        # The server has the subscription once a flush came back.
        await nc.flush()
        print("ready", file=sys.stderr, flush=True)
        message = await sub.next_msg(timeout=TIMEOUT)
        show(from_http(dict(message.headers or {}), message.data))
        await nc.close()

    asyncio.run(run())


# --------------------------------------------------------------- rabbitmq
# The CloudEvents AMQP binding on AMQP 0-9-1, as RabbitMQ users apply it:
# attributes as `cloudEvents_<name>` headers, datacontenttype as the
# content_type property.

def rabbit_params(url):
    import pika

    return pika.URLParameters(url)


def rabbitmq_publish(url, topic):
    import pika

    ev = event()
    attributes = dict(ev.get_attributes())
    content_type = attributes.pop("datacontenttype")
    headers = {f"cloudEvents_{name}": str(value) for name, value in attributes.items()}
    connection = pika.BlockingConnection(rabbit_params(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(
        exchange="msg",
        routing_key=topic,
        body=json.dumps(ev.get_data()).encode(),
        properties=pika.BasicProperties(content_type=content_type, headers=headers,
                                        delivery_mode=2),
        mandatory=True,
    )
    connection.close()


def rabbitmq_consume(url, topic):
    import pika

    connection = pika.BlockingConnection(rabbit_params(url))
    channel = connection.channel()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(queue=queue, exchange="msg", routing_key=topic)
    print("ready", file=sys.stderr, flush=True)
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        attributes = {}
        for name, value in (properties.headers or {}).items():
            for prefix in ("cloudEvents_", "cloudEvents:"):
                if name.startswith(prefix):
                    if isinstance(value, bytes):
                        value = value.decode()
                    attributes[name[len(prefix):]] = value
        if properties.content_type:
            attributes["datacontenttype"] = properties.content_type
        show(CloudEvent(attributes, json.loads(body)))
        connection.close()
        return
    sys.exit("rabbitmq: nothing arrived")


def main():
    action, broker, url, topic = sys.argv[1:5]
    globals()[f"{broker}_{action}"](url, topic)


if __name__ == "__main__":
    main()
