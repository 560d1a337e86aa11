"""Dates and times to the second in the admin and templates: runs last milliseconds to minutes,
and "6:13 p.m." cannot tell two events of one run apart."""

DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s"
TIME_FORMAT = "H:i:s"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
