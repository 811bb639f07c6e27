"""Private compiled fast path; import it through dataplane.fastpath."""
