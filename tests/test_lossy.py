"""agent.lossy: the router's lossy-context counter and command parsing (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.bus import wire
from agent.lossy import LOSSY_KEY, LossyCommandError, LossyLink, packets_to_drop, packets_to_drop_in


def test_drops_exactly_n_then_forwards() -> None:
    link = LossyLink()
    assert not link.take()
    link.start(3)
    assert [link.take() for _ in range(5)] == [True, True, True, False, False]
    assert link.dropped == 3


@given(first=st.integers(0, 50), used=st.integers(0, 60), second=st.integers(0, 50))
def test_a_new_command_sets_the_count_anew(first: int, used: int, second: int) -> None:
    link = LossyLink()
    link.start(first)
    for _ in range(used):
        link.take()
    link.start(second)
    drops = [link.take() for _ in range(120)]
    assert drops == [True] * second + [False] * (120 - second)


@pytest.mark.parametrize(
    ("msg", "n"),
    [
        ({"number_of_packets_to_drop": 1}, 1),
        ({"_type": "routing.lossy.link.start", "number_of_packets_to_drop": 0}, 0),
    ],
)
def test_packets_to_drop(msg: dict[str, object], n: int) -> None:
    assert packets_to_drop(msg) == n


@pytest.mark.parametrize(
    "msg",
    [
        {},
        {"number_of_packets_to_drop": "2"},
        {"number_of_packets_to_drop": 1.5},
        {"number_of_packets_to_drop": True},
        {"number_of_packets_to_drop": None},
        {"number_of_packets_to_drop": -1},
        {"number_of_packets_to_drop": 10**7},
    ],
)
def test_malformed_commands_are_one_line_errors(msg: dict[str, object]) -> None:
    with pytest.raises(LossyCommandError) as err:
        packets_to_drop(msg)
    assert "\n" not in str(err.value) and "number_of_packets_to_drop" in str(err.value)


def test_the_command_is_a_typed_wire_message_read_by_lossy() -> None:
    body = b'{"_type": "routing.lossy.link.start", "number_of_packets_to_drop": 4}'
    msg = wire.parse(LOSSY_KEY, body, "application/json")
    assert isinstance(msg, wire.LossyLinkStart)
    assert packets_to_drop_in(msg.body) == 4
    for bad in (b"not json", b"[1]", b'{"number_of_packets_to_drop": "4"}'):
        with pytest.raises(LossyCommandError) as err:
            packets_to_drop_in(bad)
        assert "\n" not in str(err.value)
