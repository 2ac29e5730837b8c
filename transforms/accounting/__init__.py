"""Who had which address when, and what they used: RADIUS accounting, the subscriber directory,
pseudonyms, interface counters."""
