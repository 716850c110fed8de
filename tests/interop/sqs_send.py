"""Send ids the way a plain boto3 producer does: one SendMessage per id, the
id as the body. Endpoint, region and credentials come from the usual AWS
variables. Usage: sqs_send.py QUEUE_NAME FILE"""
import sys

import boto3


def main():
    name, path = sys.argv[1:3]
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    with open(path, encoding="utf-8") as f:
        ids = [line.strip() for line in f if line.strip()]
    for i in ids:
        sqs.send_message(
            QueueUrl=url,
            MessageBody=i,
            MessageAttributes={"source": {"DataType": "String", "StringValue": "python"}},
        )
    print(len(ids))


if __name__ == "__main__":
    main()
