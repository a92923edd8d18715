"""Ids that link one connection / one request across NICs and L4 with L7."""
