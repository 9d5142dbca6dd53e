"""`agent session`: one RabbitMQ vhost per session, one least-privilege account per participant."""
