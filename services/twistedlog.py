"""Twisted's log, for serve: warnings and errors to stderr, the rest dropped.

What happened in the lab goes to the journal; stderr is for what went wrong in the server
(an unhandled error in a protocol), with its traceback, so it can be reported.
"""

from __future__ import annotations

import sys

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)


def start_logging(level: LogLevel = LogLevel.warn) -> None:
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr),
                                    [LogLevelFilterPredicate(defaultLogLevel=level)])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
