"""Read every message of a subscription with Google's own client and print
one JSON object per message (data as text, attributes). Stops after COUNT
messages or 30 s. Usage: read_items.py PROJECT SUBSCRIPTION COUNT"""
import json
import sys
import time

from google.cloud import pubsub_v1


def main():
    project, subscription_name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(project, subscription_name)
    seen = []
    deadline = time.time() + 30
    while len(seen) < count and time.time() < deadline:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 100}, timeout=5
        )
        ack_ids = []
        for received in response.received_messages:
            seen.append(
                {
                    "data": received.message.data.decode("utf-8"),
                    "attributes": dict(received.message.attributes),
                }
            )
            ack_ids.append(received.ack_id)
        if ack_ids:
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
    for message in seen:
        print(json.dumps(message, ensure_ascii=False))


if __name__ == "__main__":
    main()
