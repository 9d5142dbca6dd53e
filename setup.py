from setuptools import find_packages, setup

setup(
    name="agent",
    version="0.1.0",
    description="IP-over-AMQP tunnel agent for ioppytest interoperability sessions",
    packages=find_packages(include=["agent", "agent.*"]),
    python_requires=">=3.11",
    install_requires=[
        "scapy>=2.5",
        "pika>=1.3,<2",  # agent.bus.connection uses a few pika 1.x internals (guarded)
        "click>=8.1",
        "pyserial>=3.5",
        "pyroute2>=0.9",
        "orjson>=3.9",
        "prometheus_client>=0.17",  # --metrics (agent.metrics)
        "rich>=13",  # agent status' terminal table (imported by that command only)
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.5"],
    },
    entry_points={"console_scripts": ["agent=agent.cli:main"]},
)
