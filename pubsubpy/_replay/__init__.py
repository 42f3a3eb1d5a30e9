"""Replay of the event log (``event_log``): ``runner`` reads and runs, ``window`` parses times, ``marker`` marks
places in the log, ``handover`` joins a replay to the live queue (``worker --backfill``)."""
