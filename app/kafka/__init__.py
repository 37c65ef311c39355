"""Kafka IO: clients and topics, the records' wire format (Avro, Schema Registry), the embedded
broker for development and tests."""
