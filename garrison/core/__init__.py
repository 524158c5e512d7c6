"""Shared kernel: ids, errors, clock, pagination and the Principal."""
