"""IP-over-AMQP tunnel agent for ioppytest interoperability sessions."""

__version__ = "0.1.0"
