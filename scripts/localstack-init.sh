#!/bin/sh
# LocalStack ready hook: login-queue with its DLQ (SQS's own redrive after 5 receives),
# then the sample messages, one per line of /samples/sample-messages.jsonl.
set -eu
base=http://localhost:4566/000000000000
awslocal sqs create-queue --queue-name login-queue-dlq >/dev/null
dlq_arn=$(awslocal sqs get-queue-attributes --queue-url "$base/login-queue-dlq" \
  --attribute-names QueueArn --query Attributes.QueueArn --output text)
awslocal sqs create-queue --queue-name login-queue \
  --attributes "{\"RedrivePolicy\":\"{\\\"deadLetterTargetArn\\\":\\\"$dlq_arn\\\",\\\"maxReceiveCount\\\":\\\"5\\\"}\"}" >/dev/null
count=0
while IFS= read -r body; do
  awslocal sqs send-message --queue-url "$base/login-queue" --message-body "$body" >/dev/null
  count=$((count + 1))
done < /samples/sample-messages.jsonl
echo "created login-queue and login-queue-dlq, sent $count sample messages"
