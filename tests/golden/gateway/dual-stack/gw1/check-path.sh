#!/bin/sh
# NAT gateway gw1: rendered by `extnet gateway render`; do not edit.
# fails when 203.0.113.10 does not answer a ping through eth1
exec ping -n -q -c 1 -W 1 -I eth1 203.0.113.10 >/dev/null 2>&1
