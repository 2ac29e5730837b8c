"""IPFIX sequence numbers: RFC 7011 numbering and softflowd's (records up to and including the
message's own) both read as no loss when nothing was lost; a lost message or a restart is told
apart in either; what a stream showed outlives the file and the saved state."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from transforms.decode import ipfix
from transforms.decode._records import ExporterState

TEMPLATE = ipfix.FLOW_TEMPLATE_V4
OPTIONS = ipfix.sampling_options_template("packet_space")
DOMAIN = 7
KEY = ("", 10, DOMAIN)
START_MS = 1_717_340_400_000


def _flows(n: int) -> bytes:
    start = START_MS + np.arange(n, dtype=np.uint64) * 1000
    return ipfix.pack_records(
        TEMPLATE,
        {
            ipfix.IE_START_MS: start,
            ipfix.IE_END_MS: start + 500,
            ipfix.IE_SRC_V4: np.full(n, 0x0A01_0005, dtype=np.uint64),
            ipfix.IE_DST_V4: np.full(n, 0x0808_0808, dtype=np.uint64),
            ipfix.IE_SRC_PORT: np.full(n, 40000),
            ipfix.IE_DST_PORT: np.full(n, 53),
            ipfix.IE_PROTOCOL: np.full(n, 17),
            ipfix.IE_PACKETS: np.full(n, 2, dtype=np.uint64),
            ipfix.IE_OCTETS: np.full(n, 156, dtype=np.uint64),
        },
    ).tobytes()


def _message(sequence: int, flows: int, announce: bool) -> bytes:
    """One message of `flows` flow records; `announce` puts the templates and one sampling
    options record in front, as an exporter does in its first message and every so often."""
    body = b""
    if announce:
        options = ipfix.pack_records(
            OPTIONS,
            {
                ipfix.IE_SELECTOR_ID: np.array([1]),
                ipfix.IE_SAMPLING_PACKET_INTERVAL: np.array([1]),
                ipfix.IE_SAMPLING_PACKET_SPACE: np.array([0]),
            },
        ).tobytes()
        body += ipfix.encode_template_set([TEMPLATE, OPTIONS])
        body += struct.pack("!HH", OPTIONS.template_id, len(options) + 4) + options
    data = _flows(flows)
    body += struct.pack("!HH", TEMPLATE.template_id, len(data) + 4) + data
    return ipfix.HEADER.pack(10, ipfix.HEADER.size + len(body), 1_717_340_400, sequence % (1 << 32), DOMAIN) + body


def _stream(
    sizes: list[int], includes_own: bool, sent: int = 0, lose: tuple[int, ...] = (), announce: tuple[int, ...] = (0,)
) -> tuple[bytes, int]:
    """Messages of `sizes` flow records numbered the RFC way (records sent before the message,
    options records included) or softflowd's (flow records sent up to and including the
    message's own); messages at the indexes `lose` are left out. Returns the bytes and the count
    the next message continues from."""
    out = b""
    for index, size in enumerate(sizes):
        announced = index in announce
        if includes_own:
            sent += size
            number = sent
        else:
            number = sent
            sent += size + announced
        if index not in lose:
            out += _message(number, size, announced)
    return out, sent


SIZES = [3, 5, 2, 7, 4, 4, 6]


@pytest.mark.parametrize("includes_own", [False, True], ids=["rfc", "softflowd"])
def test_either_numbering_reads_as_no_loss_when_nothing_was_lost(includes_own: bool) -> None:
    # The options record of a later announcement is not in softflowd's count either.
    data, _ = _stream(SIZES, includes_own, announce=(0, 4))
    state = ExporterState()
    result = ipfix.decode_ipfix(data, "r", "f.ipfix", state)
    assert result.problems == []
    assert result.flows.height == sum(SIZES)
    assert (result.lost_records, result.lost_datagrams) == (0, 0)
    assert state.sequence_includes_own == {KEY: includes_own}


@pytest.mark.parametrize("includes_own", [False, True], ids=["rfc", "softflowd"])
def test_a_lost_message_counts_its_records_in_either_numbering(includes_own: bool) -> None:
    data, _ = _stream(SIZES, includes_own, lose=(3,))
    result = ipfix.decode_ipfix(data, "r", "f.ipfix", ExporterState())
    assert result.flows.height == sum(SIZES) - SIZES[3]
    assert result.lost_records == SIZES[3]


@pytest.mark.parametrize("includes_own", [False, True], ids=["rfc", "softflowd"])
def test_a_restart_is_not_loss_and_the_numbering_is_still_followed_after_it(includes_own: bool) -> None:
    before, _ = _stream(SIZES, includes_own)
    restarted, _ = _stream([4, 2, 5, 3], includes_own)
    result = ipfix.decode_ipfix(before + restarted, "r", "f.ipfix", ExporterState())
    assert result.lost_records == 0
    lossy, _ = _stream([4, 2, 5, 3], includes_own, lose=(2,))
    result = ipfix.decode_ipfix(before + lossy, "r", "f.ipfix", ExporterState())
    assert result.lost_records == 5


def test_the_numbering_is_told_across_files_and_kept_in_saved_state() -> None:
    # Equal sizes cannot tell the numberings apart; the pair across the file boundary can.
    state = ExporterState()
    first, sent = _stream([5, 5], True)
    second, sent = _stream([8, 8], True, sent, announce=())
    assert ipfix.decode_ipfix(first, "r", "1.ipfix", state).lost_records == 0
    assert state.sequence_includes_own == {}
    assert ipfix.decode_ipfix(second, "r", "2.ipfix", state).lost_records == 0
    assert state.sequence_includes_own == {KEY: True}

    # Saved and loaded: a loss whose neighbours differ in size counts the lost message's records,
    # where the RFC reading would count 9 + 6 - 4.
    saved = ExporterState.from_json(state.to_json())
    assert saved.sequence_includes_own == {KEY: True}
    third, _ = _stream([4, 4, 9, 6], True, sent, lose=(2,), announce=())
    assert ipfix.decode_ipfix(third, "r", "3.ipfix", saved).lost_records == 9
    forgotten = ExporterState.from_json(state.to_json())
    forgotten.sequence_includes_own.clear()
    assert ipfix.decode_ipfix(third, "r", "3.ipfix", forgotten).lost_records == 11


def test_state_saved_before_numberings_were_kept_still_loads() -> None:
    old = '{"templates": [], "sampling": [], "system_init_ms": [["", 1, 1717340400000]]}'
    state = ExporterState.from_json(old)
    assert state.sequence_includes_own == {}
    assert state.system_init_ms == {("", 1): 1_717_340_400_000}


def test_messages_of_a_template_not_yet_known_do_not_tell_the_numbering() -> None:
    # A collector starting mid-stream cannot count the records of messages before the templates
    # arrive; the RFC numbering of equal-sized messages must not read as softflowd's then.
    _, sent = _stream([6], False)
    before_templates, sent = _stream([6, 6], False, sent, announce=())
    with_templates, sent = _stream([6, 6, 3, 6], False, sent)
    state = ExporterState()
    ipfix.decode_ipfix(before_templates + with_templates, "r", "f.ipfix", state)
    assert state.sequence_includes_own == {KEY: False}
