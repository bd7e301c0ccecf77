"""The terminated state's message: the termination file, or the log's tail on failure."""

from __future__ import annotations

from kubetune_localcluster.pod_status import termination_message


def test_termination_messages_keep_the_last_4096_bytes_or_fall_back_to_logs() -> None:
    long = b"x" * 5000 + b"END"
    assert termination_message(long, b"", None, 0) == ("x" * 4093 + "END")
    log = b"".join(f"line {i}\n".encode() for i in range(100))
    fallback = termination_message(b"", log, "FallbackToLogsOnError", 1)
    assert fallback.startswith("line 20\n")
    assert fallback.endswith("line 99\n")
    # No fallback for a success, nor under the default policy.
    assert termination_message(b"", log, "FallbackToLogsOnError", 0) == ""
    assert termination_message(b"", log, "File", 1) == ""
