"""IPFIX streams shaped as a router sends them: MTU-sized datagrams flushed by a timer, several
observation domains, templates and sampling options refreshed every few minutes, sequence
numbers that wrap.

A collector that stores the datagrams it receives back to back (RFC 5655 style) writes exactly
these bytes, so the generator, the tests and the benchmarks decode what production delivers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from transforms.decode import ipfix
from transforms.decode._records import Template

MTU_MESSAGE = 1400
SEQUENCE_SPACE = 1 << 32


@dataclass(frozen=True)
class ExportShape:
    """How an exporter frames its records: message size limit, flush timer, domains, refreshes."""

    message_size: int = MTU_MESSAGE
    flush_ms: int = 5_000
    domains: int = 2
    template_refresh_s: int = 600
    # Where each domain's sequence number starts: close to 2^32 so that a week's numbers wrap.
    first_sequence: int = SEQUENCE_SPACE - 200_000


def sampling_options(style: str, rate: int) -> tuple[Template, dict[int, np.ndarray]]:
    """The options template and the one options record announcing 1-in-`rate` for selector 1."""
    options = ipfix.sampling_options_template(style)
    if style == "interval":
        values = {ipfix.IE_SELECTOR_ID: np.array([1]), ipfix.IE_SAMPLING_INTERVAL: np.array([rate])}
    else:
        values = {
            ipfix.IE_SELECTOR_ID: np.array([1]),
            ipfix.IE_SAMPLING_PACKET_INTERVAL: np.array([1]),
            ipfix.IE_SAMPLING_PACKET_SPACE: np.array([rate - 1]),
        }
    return options, values


def _records(flows: pl.DataFrame, v6: bool) -> bytes:
    part = flows.filter(pl.col("is_v6") == v6)
    template = ipfix.FLOW_TEMPLATE_V6 if v6 else ipfix.FLOW_TEMPLATE_V4
    columns: dict[int, np.ndarray] = {
        ipfix.IE_START_MS: part["first_ts"].to_numpy(),
        ipfix.IE_END_MS: part["last_ts"].to_numpy(),
        ipfix.IE_SRC_PORT: part["src_port"].to_numpy(),
        ipfix.IE_DST_PORT: part["dst_port"].to_numpy(),
        ipfix.IE_PROTOCOL: part["protocol"].to_numpy(),
        ipfix.IE_PACKETS: part["packets"].to_numpy(),
        ipfix.IE_OCTETS: part["bytes"].to_numpy(),
    }
    if v6:
        columns[ipfix.IE_SRC_V6] = np.stack([part["src_hi"].to_numpy(), part["src_lo"].to_numpy()], axis=1)
        columns[ipfix.IE_DST_V6] = np.stack([part["dst_hi"].to_numpy(), part["dst_lo"].to_numpy()], axis=1)
    else:
        columns[ipfix.IE_SRC_V4] = part["src_lo"].to_numpy() & np.uint64(0xFFFF_FFFF)
        columns[ipfix.IE_DST_V4] = part["dst_lo"].to_numpy() & np.uint64(0xFFFF_FFFF)
    if part.is_empty():
        return b""
    return ipfix.pack_records(template, columns).tobytes()


def encode_export_stream(
    flows: pl.DataFrame,
    shape: ExportShape,
    base_domain: int,
    sampling_style: str,
    sampling_rate: int,
    sequences: dict[int, int] | None = None,
) -> bytes:
    """The stored datagrams (back-to-back IPFIX messages) an exporter sends for `flows`
    (first_ts, last_ts in epoch ms, addresses as hi/lo, is_v6, ports, protocol, packets, bytes).

    A flow leaves at the first flush tick after it ends; each (domain, tick) fills messages of at
    most `message_size` bytes, IPv4 then IPv6 set. Each domain sends a message with its templates
    and sampling options before its first data and every `template_refresh_s` of export time.
    `sequences` carries each domain's next sequence number from one file to the next.
    """
    sequences = sequences if sequences is not None else {}
    v4_size = ipfix.record_dtype(ipfix.FLOW_TEMPLATE_V4).itemsize
    v6_size = ipfix.record_dtype(ipfix.FLOW_TEMPLATE_V6).itemsize
    options, option_values = sampling_options(sampling_style, sampling_rate)
    template_body = ipfix.encode_template_set([ipfix.FLOW_TEMPLATE_V4, ipfix.FLOW_TEMPLATE_V6, options])
    option_record = ipfix.pack_records(options, option_values).tobytes()
    template_body += (
        ipfix.SET_HEADER.pack(options.template_id, ipfix.SET_HEADER.size + len(option_record)) + option_record
    )
    if flows.is_empty():
        return b""
    # The domain follows the flow's addresses and ports (as a line card would), not a random draw.
    mixed = (
        pl.col("src_lo").hash(1) ^ pl.col("dst_lo").hash(2) ^ pl.col("src_port").hash(3) ^ pl.col("dst_port").hash(4)
    )
    ordered = (
        flows.with_columns(
            domain=(mixed % shape.domains).cast(pl.UInt32) + base_domain,
            tick=(pl.col("last_ts") // shape.flush_ms + 1) * shape.flush_ms,
            size=pl.when(pl.col("is_v6")).then(v6_size).otherwise(v4_size),
        )
        .sort("tick", "domain", "is_v6", maintain_order=True)
        .with_columns(filled=pl.col("size").cum_sum().over("tick", "domain"))
    )
    budget = shape.message_size - ipfix.HEADER.size - 2 * ipfix.SET_HEADER.size - v6_size
    if budget < v6_size:
        raise ValueError(f"message size {shape.message_size} cannot hold one record")
    ordered = ordered.with_columns(part=(pl.col("filled") - 1) // budget)
    messages = (
        ordered.group_by("tick", "domain", "part", maintain_order=True)
        .agg(
            v4=(~pl.col("is_v6")).sum().cast(pl.Int64),
            v6=pl.col("is_v6").sum().cast(pl.Int64),
        )
        .to_dict(as_series=False)
    )
    v4_bytes = memoryview(_records(ordered, False))
    v6_bytes = memoryview(_records(ordered, True))
    refresh_ms = shape.template_refresh_s * 1000
    announced: dict[int, int] = {}  # domain -> tick of its last template message
    out: list[bytes | memoryview] = []
    v4_at = v6_at = 0
    for tick, domain, v4, v6 in zip(messages["tick"], messages["domain"], messages["v4"], messages["v6"], strict=True):
        export_time = tick // 1000
        sequence = sequences.get(domain, shape.first_sequence)
        last = announced.get(domain)
        if last is None or tick - last >= refresh_ms:
            announced[domain] = tick
            out.append(
                ipfix.HEADER.pack(
                    ipfix.IPFIX_VERSION, ipfix.HEADER.size + len(template_body), export_time, sequence, domain
                )
            )
            out.append(template_body)
            sequence = (sequence + 1) % SEQUENCE_SPACE  # the options record is a data record
        length = ipfix.HEADER.size
        sets: list[bytes | memoryview] = []
        if v4:
            sets.append(ipfix.SET_HEADER.pack(ipfix.FLOW_TEMPLATE_V4.template_id, 4 + v4 * v4_size))
            sets.append(v4_bytes[v4_at * v4_size : (v4_at + v4) * v4_size])
            length += 4 + v4 * v4_size
        if v6:
            sets.append(ipfix.SET_HEADER.pack(ipfix.FLOW_TEMPLATE_V6.template_id, 4 + v6 * v6_size))
            sets.append(v6_bytes[v6_at * v6_size : (v6_at + v6) * v6_size])
            length += 4 + v6 * v6_size
        out.append(ipfix.HEADER.pack(ipfix.IPFIX_VERSION, length, export_time, sequence, domain))
        out.extend(sets)
        v4_at += v4
        v6_at += v6
        sequences[domain] = (sequence + v4 + v6) % SEQUENCE_SPACE
    return b"".join(out)
