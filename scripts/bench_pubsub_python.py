"""The blog post's design, measured: a publish loop (master.py) and a
streaming pull whose callback acks each message (worker.py), with Google's
Python client. Prints publish and process rates for N items.
Usage: PUBSUB_EMULATOR_HOST=... bench_pubsub_python.py PROJECT TOPIC SUBSCRIPTION N"""
import sys
import threading
import time

from google.cloud import pubsub_v1


def main():
    project, topic_name, subscription_name, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, topic_name)
    started = time.time()
    futures = [publisher.publish(topic, str(i).encode()) for i in range(n)]
    for future in futures:
        future.result(timeout=120)
    publish_rate = n / (time.time() - started)

    subscriber = pubsub_v1.SubscriberClient()
    subscription = subscriber.subscription_path(project, subscription_name)
    lock = threading.Lock()
    done = threading.Event()
    count = [0]

    def callback(message):
        message.ack()
        with lock:
            count[0] += 1
            if count[0] >= n:
                done.set()

    started = time.time()
    future = subscriber.subscribe(subscription, callback=callback)
    done.wait(timeout=600)
    elapsed = time.time() - started
    future.cancel()
    print(
        f"queue pubsub  mode python blog design  items {n}  publish {publish_rate:.0f} items/s  "
        f"process {count[0] / elapsed:.0f} items/s ({elapsed:.3f} s)"
    )


if __name__ == "__main__":
    main()
