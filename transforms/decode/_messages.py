"""IPFIX and NetFlow v9 messages decoded in bulk: sets found for all messages at once, records of
each template gathered from the whole buffer and converted in one vectorised pass.

Exporters send small messages (one UDP datagram, often a few records), so per-message Python
work would dominate. Here Python touches only what is rare (template sets, options records,
variable-length records and problems); everything counted in records is numpy.
Templates and options still take effect in stream order: a data set uses the template that the
latest earlier template set defined for its (origin, domain, template id).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from transforms.decode._records import (
    CHUNK_RECORDS,
    IE_END_UPTIME,
    IE_START_UPTIME,
    IE_SYSTEM_INIT_MS,
    Accumulator,
    Batch,
    Clock,
    Template,
    decode_data_records,
    flow_columns,
    handle_data_set,
    needs_clock,
    options_values,
    record_dtype,
    sampling_from_options,
)
from transforms.decode._walk import copy_runs, sets_of_messages

NO_INIT = np.iinfo(np.int64).min
BLOCK_RECORDS = 1 << 18
# Beyond the year 9999 in ms (and far below int64): a larger clock reference is damage.
MAX_EPOCH_MS = 253_402_300_800_000


@dataclass
class MessageTable:
    """Messages located in one buffer, in stream order, with their header fields.

    `origins[origin[i]]` is the export origin (a datagram's source address, "" in stored files);
    `init_ms` is the sysUpTime origin from a v9 header (IPFIX takes it from options instead).
    """

    version: int
    body: np.ndarray
    end: np.ndarray
    domain: np.ndarray
    sequence: np.ndarray
    export_ms: np.ndarray
    origin: np.ndarray
    origins: list[str]
    init_ms: np.ndarray | None = None


def be16(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Big-endian 16-bit values at byte offsets `at`, as int64."""
    return fields(buf, at, U16).astype(np.int64)


def be32(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Big-endian 32-bit values at byte offsets `at`, as int64."""
    return fields(buf, at, U32).astype(np.int64)


U16 = np.dtype(">u2")
U32 = np.dtype(">u4")
SET_HEADER = np.dtype([("set_id", ">u2"), ("length", ">u2")])


def fields(buf: np.ndarray, at: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Values of `dtype` (a fixed-size record) at byte offsets `at`, with one gather."""
    if not at.size:
        return np.zeros(0, dtype=dtype)
    rows = np.lib.stride_tricks.sliding_window_view(buf, dtype.itemsize)
    return np.ascontiguousarray(rows[at]).view(dtype).reshape(at.size)


def _pairs_of(origin: np.ndarray, domain: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A dense number for each (origin index, domain) and the pairs by number."""
    number = np.empty(origin.size, dtype=np.int64)
    pairs: list[tuple[int, int]] = []
    for index, (code, members) in enumerate(groups_of((origin.astype(np.int64) << 32) | domain.astype(np.int64))):
        number[members] = index
        pairs.append((code >> 32, code & 0xFFFF_FFFF))
    return number, pairs


def groups_of(codes: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(code, positions of that code in ascending order) for each distinct code, codes ascending.

    Exporters have few (origin, domain, template) keys, so a comparison per key beats sorting a
    million codes; many distinct keys fall back to one stable sort."""
    if not codes.size:
        return []
    distinct = np.sort(pl.Series(codes).unique().to_numpy())
    if distinct.size <= 64:
        return [(int(code), np.flatnonzero(codes == code)) for code in distinct]
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], distinct)
    bounds = np.append(bounds, codes.size)
    return [(int(code), order[bounds[k] : bounds[k + 1]]) for k, code in enumerate(distinct)]


@dataclass
class _Sets:
    pos: np.ndarray
    set_id: np.ndarray
    length: np.ndarray
    message: np.ndarray


def _walk_sets(buf: np.ndarray, table: MessageTable, acc: Accumulator) -> _Sets:
    """Every set of every message, in stream order; a bad set length ends its message."""
    (pos, set_id, length, message), (bad_pos, bad_length, bad_message) = sets_of_messages(buf, table.body, table.end)
    for at, declared, owner in zip(bad_pos.tolist(), bad_length.tolist(), bad_message.tolist(), strict=True):
        if table.version == 9:
            reason = f"flowset length {declared} invalid; rest of the packet skipped"
        else:
            reason = f"set length {declared} invalid; rest of the message skipped"
        acc.problem(at, reason, int(table.end[owner]) - at)
    return _Sets(pos, set_id, length, message)


def _uses_uptime(template: Template) -> bool:
    ies = {ie for ie, _, enterprise in template.fields if enterprise == 0}
    return bool(ies & {IE_START_UPTIME, IE_END_UPTIME}) and IE_SYSTEM_INIT_MS not in ies


TemplateParser = Callable[[memoryview, bool, int], list[tuple[int, Template | None]]]


def decode_table(
    data: bytes | memoryview, buf: np.ndarray, table: MessageTable, acc: Accumulator, parse_templates: TemplateParser
) -> None:
    """Decodes every message of `table` into the accumulator (flows, options, sequence counts)."""
    view = memoryview(data)
    v9 = table.version == 9
    prefix = "v9" if v9 else "ipfix"
    template_ids = (0, 1) if v9 else (2, 3)
    sets = _walk_sets(buf, table, acc)
    origin_of = table.origin[sets.message]
    domain_of = table.domain[sets.message]
    records_of = np.zeros(sets.pos.size, dtype=np.int64)  # data records per set, for sequence numbers

    for index in np.flatnonzero((sets.set_id < 256) & ~np.isin(sets.set_id, template_ids)).tolist():
        kind = "flowset id" if v9 else "set id"
        acc.problem(
            int(sets.pos[index]),
            f"reserved {kind} {sets.set_id[index]}; {'skipped' if v9 else 'set skipped'}",
            int(sets.length[index]),
        )

    # Template sets take effect in order: remember, per key, where each definition came.
    initial = dict(acc.state.templates)
    current = dict(initial)
    changes: dict[tuple[str, int, int], tuple[list[int], list[Template | None]]] = {}

    def change(key: tuple[str, int, int], where: int, template: Template | None) -> None:
        positions, templates = changes.setdefault(key, ([], []))
        positions.append(where)
        templates.append(template)
        if template is None:
            current.pop(key, None)
        else:
            current[key] = template

    cleared: list[tuple[str, int]] = []  # (origin, domain) pairs whose templates were all withdrawn
    parsed_sets: dict[tuple[bool, bytes], list[tuple[int, Template | None]]] = {}
    template_sets = np.flatnonzero(np.isin(sets.set_id, template_ids))
    for index in template_sets.tolist():
        pos, length = int(sets.pos[index]), int(sets.length[index])
        origin, domain = table.origins[origin_of[index]], int(domain_of[index])
        options = int(sets.set_id[index]) == template_ids[1]
        # Exporters resend the same templates every few minutes: parse each distinct set once.
        raw = (options, bytes(view[pos + 4 : pos + length]))
        parsed = parsed_sets.get(raw)
        if parsed is None:
            try:
                parsed = parse_templates(view[pos + 4 : pos + length], options, pos + 4)
            except (ValueError, struct.error) as exc:
                acc.problem(pos, str(exc), length)
                continue
            parsed_sets[raw] = parsed
        for template_id, template in parsed:
            if template is None and template_id in template_ids and not v9:
                cleared.append((origin, domain))
                for key in [k for k in current if k[:2] == (origin, domain)]:
                    change(key, pos, None)
            else:
                change((origin, domain, template_id), pos, template)
    acc.state.templates.clear()
    acc.state.templates.update(current)

    # The template in force for each data set. (origin, domain) pairs get a dense number first: a
    # capture may hold datagrams from any number of source addresses.
    data_sets = np.flatnonzero(sets.set_id >= 256)
    records_of[data_sets] = -1  # until counted: a set of an unknown template or undecodable stays so
    pair_of, pairs = _pairs_of(origin_of[data_sets], domain_of[data_sets])
    codes = (pair_of.astype(np.uint64) << np.uint64(16)) | sets.set_id[data_sets].astype(np.uint64)
    templates: list[Template] = []
    template_index: dict[Template, int] = {}
    chosen = np.full(data_sets.size, -1, dtype=np.int64)
    entry_reads: dict[tuple[str, int, int], Template | None] = {}  # looked up in the state as it came
    for code, members in groups_of(codes):
        pair_origin, pair_domain = pairs[code >> 16]
        key = (table.origins[pair_origin], pair_domain, code & 0xFFFF)
        positions, versions = changes.get(key, ([], []))
        slots = np.full(len(versions) + 1, -1, dtype=np.int64)
        for slot, template in enumerate([initial.get(key), *versions]):
            if template is not None:
                if template not in template_index:
                    template_index[template] = len(templates)
                    templates.append(template)
                slots[slot] = template_index[template]
        picks = np.searchsorted(np.array(positions, dtype=np.int64), sets.pos[data_sets[members]])
        chosen[members] = slots[picks]
        if not picks.all():
            entry_reads[key] = initial.get(key)
    if acc.state.trace is not None:
        final = {key: templates_[-1] for key, (_, templates_) in changes.items()}
        acc.state.trace.record_templates(entry_reads, cleared, final)

    for member in np.flatnonzero(chosen < 0).tolist():
        index = int(data_sets[member])
        set_id, domain = int(sets.set_id[index]), int(domain_of[index])
        if v9:
            reason = f"data flowset for unknown template {set_id} of source id {domain}; skipped"
        else:
            reason = f"data set for unknown template {set_id} in domain {domain}; set skipped"
        acc.problem(int(sets.pos[index]), reason, int(sets.length[index]))

    # Options records, in stream order: sampling announcements and (IPFIX) clock references.
    is_options = np.array([t.scope_count > 0 for t in templates] + [False], dtype=bool)
    known = chosen >= 0
    options_members = np.flatnonzero(known & is_options[chosen])
    init_changes: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
    initial_init = dict(acc.state.system_init_ms)
    init_written: dict[tuple[str, int], int] = {}
    init_reads: dict[tuple[str, int], int | None] = {}
    options_seen: dict[tuple[Template, bytes], tuple[int, list[dict[int, int]]]] = {}
    last_announced = {(a.origin, a.domain_id, a.selector_id): a for a in acc.state.sampling}
    for member in options_members.tolist():
        index = int(data_sets[member])
        pos, length = int(sets.pos[index]), int(sets.length[index])
        origin_index, domain = int(origin_of[index]), int(domain_of[index])
        origin = table.origins[origin_index]
        template = templates[chosen[member]]
        raw_options = (template, bytes(view[pos + 4 : pos + length]))
        decoded = options_seen.get(raw_options)
        if decoded is None:
            try:
                records, usable = decode_data_records(view[pos + 4 : pos + length], template)
            except (ValueError, struct.error) as exc:
                acc.problem(pos, str(exc), length)
                continue
            decoded = options_seen[raw_options] = (int(records.size), options_values(records, usable))
        records_of[index] = decoded[0]
        for values in decoded[1]:
            if values.get(IE_SYSTEM_INIT_MS, 0) >= MAX_EPOCH_MS:
                reason = f"systemInitTimeMilliseconds {values[IE_SYSTEM_INIT_MS]} is out of range; ignored"
                acc.problem(pos, reason, length)
                values = {ie: value for ie, value in values.items() if ie != IE_SYSTEM_INIT_MS}  # noqa: PLW2901
            if IE_SYSTEM_INIT_MS in values:
                acc.state.system_init_ms[(origin, domain)] = values[IE_SYSTEM_INIT_MS]
                init_written[(origin, domain)] = values[IE_SYSTEM_INIT_MS]
                where, value = init_changes.setdefault((origin_index, domain), ([], []))
                where.append(pos)
                value.append(values[IE_SYSTEM_INIT_MS])
            announcement = sampling_from_options(values, origin, domain, prefix)
            if announcement is not None:
                acc.sampling.append(announcement)
                # Exporters repeat their announcement every few minutes: the state keeps a change
                # of rate (the latest one counts), not every repetition.
                announced = (announcement.origin, announcement.domain_id, announcement.selector_id)
                if last_announced.get(announced) != announcement:
                    acc.state.sampling.append(announcement)
                    last_announced[announced] = announcement

    # Flow records, one gather per (template, origin, domain).
    flow_members = np.flatnonzero(known & ~is_options[chosen])
    groups = (chosen[flow_members].astype(np.uint64) << np.uint64(40)) | pair_of[flow_members].astype(np.uint64)
    for code, in_group in groups_of(groups):
        template = templates[code >> 40]
        origin_index, domain = pairs[code & 0xFF_FFFF_FFFF]
        origin = table.origins[origin_index]
        indexes = data_sets[flow_members[in_group]]
        set_pos = sets.pos[indexes]
        lengths = sets.length[indexes]
        messages = sets.message[indexes]
        if v9 and table.init_ms is not None:
            init = table.init_ms[messages]
        else:
            init = _init_at(set_pos, init_changes.get((origin_index, domain)), initial_init.get((origin, domain)))
            init_reads[(origin, domain)] = initial_init.get((origin, domain))
        export_ms = table.export_ms[messages]
        record_length = template.fixed_length
        if record_length is None:
            for slot, index in enumerate(indexes.tolist()):
                pos, length = int(set_pos[slot]), int(lengths[slot])
                clock = Clock(int(export_ms[slot]), None if init[slot] == NO_INIT else int(init[slot]))
                try:
                    records_of[index] = handle_data_set(
                        acc, view[pos + 4 : pos + length], template, origin, domain, clock, pos, prefix
                    )
                except (ValueError, struct.error) as exc:
                    acc.problem(pos, str(exc), length)
            continue
        counts = (lengths - 4) // record_length
        records_of[indexes] = counts
        clocked = needs_clock(template)
        dtype = record_dtype(template)
        # Blocks of about BLOCK_RECORDS: every array of a block stays below glibc's mmap threshold,
        # so freed memory is reused instead of faulted in again page by page.
        block_of = (np.cumsum(counts) - counts) // BLOCK_RECORDS
        edges = np.flatnonzero(np.diff(block_of, prepend=-1, append=block_of[-1] + 1 if block_of.size else 0))
        scratch = np.empty(int(np.add.reduceat(counts, edges[:-1]).max()) * record_length, dtype=np.uint8)
        holding = np.flatnonzero(counts > 0)  # sets shorter than one record are padding only
        if not holding.size:
            continue
        first_set = int(holding[0])
        probe = copy_runs(buf, set_pos[first_set : first_set + 1] + 4, np.array([record_length])).view(dtype)
        why = _template_unusable(probe, template, clocked, export_ms[first_set : first_set + 1])
        if why is not None:
            for slot in holding.tolist():
                text = f"template {template.template_id}: {why}; {counts[slot]} records set aside"
                acc.problem(int(set_pos[slot]), text, int(lengths[slot] - 4))
            continue
        for first, stop in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
            block = slice(first, stop)
            block_counts = counts[block]
            # The block's records are converted before the next block reuses the buffer.
            records = copy_runs(buf, set_pos[block] + 4, block_counts * record_length, scratch).view(dtype)
            block_export, block_init = export_ms[block], init[block]
            if clocked and _uses_uptime(template):
                set_aside = block_init == NO_INIT
                for slot in np.flatnonzero(set_aside & (block_counts > 0)).tolist():
                    text = (
                        f"template {template.template_id}: sysUpTime-relative timestamps but no "
                        f"systemInitTimeMilliseconds announced; {block_counts[slot]} records set aside"
                    )
                    acc.problem(int(set_pos[first + slot]), text, int(lengths[first + slot] - 4))
                if set_aside.any():
                    records = records[np.repeat(~set_aside, block_counts)]
                    block_export, block_init = block_export[~set_aside], block_init[~set_aside]
                    block_counts = block_counts[~set_aside]
            if not records.size:
                continue
            per_record_export = np.repeat(block_export, block_counts) if clocked else None
            per_record_init = np.repeat(block_init, block_counts) if clocked else None
            columns, rate_source = _convert(records, template, per_record_export, per_record_init)
            acc.batches.append(Batch(columns, origin, domain, rate_source))

    if acc.state.trace is not None:
        acc.state.trace.record_clocks(init_reads, init_written)
    n = table.body.size
    uncounted = records_of < 0
    records_of[uncounted] = 0
    whole = np.bincount(sets.message, weights=uncounted, minlength=n) == 0
    if v9:
        advance = counted = np.ones(n, dtype=np.int64)
    else:
        options_set = np.zeros(sets.pos.size, dtype=bool)
        options_set[data_sets[options_members]] = True
        advance = np.bincount(sets.message, weights=records_of, minlength=n).astype(np.int64)
        counted = np.bincount(sets.message, weights=np.where(options_set, 0, records_of), minlength=n).astype(np.int64)
    count_sequences(
        table.version, table.origin, table.domain, table.sequence, advance, table.origins, acc, counted, whole
    )


def gather_records(buf: np.ndarray, starts: np.ndarray, counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The `counts[i]` fixed-length records at `starts[i]`, all in one array."""
    return copy_runs(buf, starts, counts * dtype.itemsize).view(dtype)


def _init_at(positions: np.ndarray, changes: tuple[list[int], list[int]] | None, initial: int | None) -> np.ndarray:
    """The systemInitTimeMilliseconds in force at each set (NO_INIT when none was announced yet)."""
    start = NO_INIT if initial is None else initial
    if changes is None:
        return np.full(positions.size, start, dtype=np.int64)
    where, values = changes
    picks = np.searchsorted(np.array(where, dtype=np.int64), positions)
    return np.array([start, *values], dtype=np.int64)[picks]


def _template_unusable(probe: np.ndarray, template: Template, clocked: bool, export_ms: np.ndarray) -> str | None:
    """Why records of `template` cannot become flows (checked on one record), or None."""
    if not probe.size:
        return None
    decoded = flow_columns(probe, template, Clock(int(export_ms[0]), 0 if clocked else None))
    return decoded if isinstance(decoded, str) else None


def _convert(
    records: np.ndarray, template: Template, export_ms: np.ndarray | None, init: np.ndarray | None
) -> tuple[dict[str, np.ndarray], str | None]:
    """Canonical columns of `records`, a cache-sized chunk at a time (see Accumulator.flush)."""
    out: dict[str, np.ndarray] = {}
    rate_source: str | None = None
    for start in range(0, records.size, CHUNK_RECORDS):
        stop = min(start + CHUNK_RECORDS, records.size)
        clock = Clock(
            export_ms[start:stop] if export_ms is not None else 0,  # type: ignore[arg-type]
            init[start:stop] if init is not None else None,  # type: ignore[arg-type]
        )
        decoded = flow_columns(records[start:stop], template, clock)
        if isinstance(decoded, str):  # checked on the first record already
            raise ValueError(decoded)
        columns, rate_source = decoded
        if not out:
            out = {name: np.empty(records.size, dtype=values.dtype) for name, values in columns.items()}
        for name, values in columns.items():
            out[name][start:stop] = values
    return out, rate_source


def count_sequences(
    version: int,
    origin: np.ndarray,
    domain: np.ndarray,
    sequence: np.ndarray,
    advance: np.ndarray,
    origins: list[str],
    acc: Accumulator,
    counted: np.ndarray | None = None,
    whole: np.ndarray | None = None,
) -> None:
    """Losses told by sequence numbers, per (origin, domain), in message order (mod 2^32).

    IPFIX and v5 number records, so a message advances by its records (`advance`; `counted` of
    them outside options data, all when not given; `whole` false where some could not be counted,
    none when not given); v9 numbers packets. Accumulator.count_sequence checks each stream, in
    whichever numbering its exporter uses."""
    if not origin.size:
        return
    if counted is None:
        counted = advance
    if whole is None:
        whole = np.ones(origin.size, dtype=bool)
    codes = (origin.astype(np.int64) << 32) | domain.astype(np.int64)
    for code, members in groups_of(codes):
        acc.count_sequence(
            (origins[code >> 32], version, code & 0xFFFF_FFFF),
            sequence[members],
            advance[members],
            counted[members],
            whole[members],
            counts_datagrams=version == 9,
        )
