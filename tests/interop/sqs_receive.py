"""Receive every message of a queue with boto3, delete it, and print one JSON
object per message (body as text, message attributes). Stops after COUNT
messages or 30 s. Usage: sqs_receive.py QUEUE_NAME COUNT"""
import json
import sys
import time

import boto3


def main():
    name, count = sys.argv[1], int(sys.argv[2])
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    seen = []
    deadline = time.time() + 30
    while len(seen) < count and time.time() < deadline:
        response = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        for message in response.get("Messages", []):
            attributes = {
                k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()
            }
            seen.append({"body": message["Body"], "attributes": attributes})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    for message in seen:
        print(json.dumps(message, ensure_ascii=False))


if __name__ == "__main__":
    main()
