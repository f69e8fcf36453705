#!/bin/sh
# NAT gateway gw2: fails when 203.0.113.10 does not answer through eth1 (rendered by `extnet gateway render`)
exec ping -n -q -c 1 -W 1 -I eth1 203.0.113.10 >/dev/null 2>&1
