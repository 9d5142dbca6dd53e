"""The AMQP edge: connection, failover, frames, the pika edge, URLs, the ioppytest wire."""
