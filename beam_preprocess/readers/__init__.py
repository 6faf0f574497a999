"""One module per dataset: ``work_items`` (cheap discovery), ``raw_records`` (I/O) and
``to_record`` (a pure function from one raw record to a canonical record)."""
