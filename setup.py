from pathlib import Path

from setuptools import find_packages, setup

# The distribution's name on PyPI; the import package and the console script are `agent`
# (`pip install agent` installs an unrelated project). agent/__init__.py names it too.
setup(
    name="ip-over-amqp",
    version="0.1.0",
    description="IP-over-AMQP tunnel agent for ioppytest interoperability sessions",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["agent", "agent.*"]),
    python_requires=">=3.10",
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
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.5", "build>=1"],
    },
    entry_points={"console_scripts": ["agent=agent.cli:main"]},
    classifiers=[
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: System :: Networking",
    ],
)
