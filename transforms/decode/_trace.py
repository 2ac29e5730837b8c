"""What decoding a group of an exporter's files read from the state it started with, and what it
changed: so that the days of a week can be decoded side by side, each from the state the last run
left, and then be checked and chained as if they had been decoded one after the other.

A file's flows depend on the exporter's state only through the templates and the clock
references (systemInitTimeMilliseconds) its data sets looked up. A group records each such
lookup that the group itself had not answered yet (an entry read). Decoded from another entry
state, the group's flows are the same exactly when every entry read finds the same value there.

What a group changes is kept as a net effect that can be applied to any entry state: per
template key its last definition or withdrawal, the (origin, domain) pairs whose templates were
all withdrawn (IPFIX template id 2/3 withdrawal), the clock references it last saw, its sampling
announcements (repetitions dropped), and every sequence-number check it would have made, in
order. Sequence numbers are only counted when the chain is applied, because what a day's first
message says was lost depends on the day before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transforms.decode._records import Accumulator, ExporterState, SamplingAnnouncement, SequenceCheck, Template

TemplateKey = tuple[str, int, int]
Pair = tuple[str, int]


@dataclass
class GroupTrace:
    """Entry reads and net changes of decoding one group of files (see the module docstring)."""

    template_reads: dict[TemplateKey, Template | None] = field(default_factory=dict)
    init_reads: dict[Pair, int | None] = field(default_factory=dict)
    template_writes: dict[TemplateKey, Template | None] = field(default_factory=dict)
    cleared_pairs: set[Pair] = field(default_factory=set)
    init_writes: dict[Pair, int] = field(default_factory=dict)
    announcements: list[SamplingAnnouncement] = field(default_factory=list)
    sequence_checks: list[SequenceCheck] = field(default_factory=list)

    def record_templates(
        self,
        reads: dict[TemplateKey, Template | None],
        cleared: list[Pair],
        written: dict[TemplateKey, Template | None],
    ) -> None:
        """One message table's template lookups (as found at its start) and its changes."""
        for key, value in reads.items():
            if key not in self.template_writes and key[:2] not in self.cleared_pairs:
                self.template_reads.setdefault(key, value)
        for pair in cleared:
            # A withdrawal of all of a pair's templates ends what the group wrote for the pair too.
            for key in [k for k in self.template_writes if k[:2] == pair]:
                del self.template_writes[key]
            self.cleared_pairs.add(pair)
        self.template_writes.update(written)

    def record_clocks(self, reads: dict[Pair, int | None], written: dict[Pair, int]) -> None:
        """One message table's clock-reference lookups (as found at its start) and changes."""
        for pair, value in reads.items():
            if pair not in self.init_writes:
                self.init_reads.setdefault(pair, value)
        self.init_writes.update(written)

    def record_announcements(self, announcements: list[SamplingAnnouncement]) -> None:
        """A file's sampling announcements, in order; a repetition of the group's last one for the
        same (origin, domain, selector) changes nothing wherever the group starts, so it is dropped."""
        last: dict[tuple[str, int, int | None], SamplingAnnouncement] = {}
        for kept in self.announcements:
            last[(kept.origin, kept.domain_id, kept.selector_id)] = kept
        for announcement in announcements:
            key = (announcement.origin, announcement.domain_id, announcement.selector_id)
            if last.get(key) != announcement:
                self.announcements.append(announcement)
                last[key] = announcement

    def holds_for(self, entry: ExporterState) -> bool:
        """True when every entry read finds the same value in `entry`: decoded from `entry`, the
        group's flows and problems would be the same."""
        return all(entry.templates.get(key) == value for key, value in self.template_reads.items()) and all(
            entry.system_init_ms.get(pair) == value for pair, value in self.init_reads.items()
        )

    def apply(self, state: ExporterState, exporter: str) -> tuple[int, int]:
        """Changes `state` as decoding the group after it would have; returns the (records,
        datagrams) that the group's sequence numbers say were lost, counted from `state`."""
        if state.trace is not None:
            raise ValueError("a traced state cannot be chained")
        for pair in self.cleared_pairs:
            for key in [k for k in state.templates if k[:2] == pair]:
                del state.templates[key]
        for key, template in self.template_writes.items():
            if template is None:
                state.templates.pop(key, None)
            else:
                state.templates[key] = template
        state.system_init_ms.update(self.init_writes)
        last = {(a.origin, a.domain_id, a.selector_id): a for a in state.sampling}
        for announcement in self.announcements:
            announced = (announcement.origin, announcement.domain_id, announcement.selector_id)
            if last.get(announced) != announcement:
                state.sampling.append(announcement)
                last[announced] = announcement
        counter = Accumulator(exporter, "", state)
        for check in self.sequence_checks:
            counter.count_sequence(
                check.key, check.sequence, check.records, check.counted, check.whole, check.counts_datagrams
            )
        return counter.lost_records, counter.lost_datagrams
