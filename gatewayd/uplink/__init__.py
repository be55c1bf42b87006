"""Delivery: from the spool to EnOS over one gateway session, live first, backlog paced."""
