"""A one-model Django app for the outbox rows (a plain save vs a save plus its outbox event)."""
