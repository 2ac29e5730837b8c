"""Flow export decoders: IPFIX, NetFlow v5/v9, pcap/pcapng captures, nfdump CSV, compression, sampling.

The public surface for flows/: `decode_flow_file` (any supported file, told by content), the
exporter state it carries across files (`ExporterState`: templates, sampling, sequence numbers),
its result (`DecodeResult`, flows in `FLOW_SCHEMA`), and the modules `compression` (reading
possibly compressed files) and `sampling` (rates resolved per exporter, domain and selector).
"""

from __future__ import annotations

from transforms.decode._records import FLOW_SCHEMA, DecodeResult, ExporterState
from transforms.decode.exports import decode_flow_file

__all__ = ["FLOW_SCHEMA", "DecodeResult", "ExporterState", "decode_flow_file"]
