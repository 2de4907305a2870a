"""CloudEvents over Kafka: envelope, topics, producer, consumer runner and dead letters."""
