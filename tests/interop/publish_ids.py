"""Publish ids the way the blog post's master.py does: one publish per id
with Google's own client. Usage: publish_ids.py PROJECT TOPIC FILE"""
import sys

from google.cloud import pubsub_v1


def main():
    project, topic_name, path = sys.argv[1:4]
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, topic_name)
    with open(path, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    futures = [publisher.publish(topic, i.encode("utf-8"), source="python") for i in ids]
    for future in futures:
        future.result(timeout=60)
    print(len(ids))


if __name__ == "__main__":
    main()
