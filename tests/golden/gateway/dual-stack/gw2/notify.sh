#!/bin/sh
# keepalived notify of NAT gateway gw2, rendered by `extnet gateway render`; do not edit.
# Called as: notify.sh INSTANCE|GROUP NAME MASTER|BACKUP|FAULT|STOP PRIORITY
conf=/etc/extnet/gateway/conntrackd.conf
instance=$2
state=$3
# the instance's state for `extnet gateway metrics`, replaced whole
if [ "$1" = INSTANCE ]; then
    vrrp=/run/extnet/gateway/vrrp
    { mkdir -p "$vrrp" && echo "$state" >"$vrrp/.$instance.tmp" && mv -f "$vrrp/.$instance.tmp" "$vrrp/$instance"; } ||
        echo "extnet-gw gw2: cannot record $state of $instance in $vrrp" >&2
fi
[ -e "$conf" ] || exit 0
ct() {
    conntrackd -C "$conf" "$@" || echo "extnet-gw gw2: conntrackd $* failed ($?) on $state of $instance" >&2
}
# true when this host still holds one of its virtual addresses
holds_any() {
    held=$(ip -4 -o addr show dev eth0)
    for a in 10.99.0.254 10.99.0.253; do
        case "$held" in *" $a/"*) return 0 ;; esac
    done
    return 1
}
case "$state" in
MASTER)
    ct -c
    ct -f
    ct -R
    ct -B
    ct -n
    ;;
BACKUP|FAULT|STOP)
    holds_any || ct -t
    ct -n
    ;;
esac
exit 0
