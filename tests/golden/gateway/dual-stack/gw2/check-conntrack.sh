#!/bin/sh
# fails when the conntrack table is fuller than 90% (rendered by `extnet gateway render`)
count=$(cat /proc/sys/net/netfilter/nf_conntrack_count) || exit 1
max=$(cat /proc/sys/net/netfilter/nf_conntrack_max) || exit 1
[ $((count * 100)) -lt $((max * 90)) ]
