"""Figure data of the report page, from published tables."""
