"""The Kubetune API types (pydantic models) and the rules they obey. Pure: no I/O."""
