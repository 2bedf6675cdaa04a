#!/usr/bin/env bash
# Installs the Debian packages the local default and the tests use on this (Debian 12) machine.
# Daemons must not start on install (the host may run no init at all): a temporary
# policy-rc.d refuses them; the project starts what it needs itself, by PID.
set -euo pipefail

packages=(
  debootstrap systemd-container iproute2 nftables openssh-client   # the local "VPS"
  openssh-server                                                    # sshd -t of the drop-in
  bind9 bind9-utils bind9-dnsutils tinyproxy                        # its DNS server and package proxy
  swaks                                                             # SMTP oracle in tests
  postfix dovecot-core dovecot-imapd dovecot-lmtpd opendkim opendkim-tools unbound   # config validation
  policyd-rate-limit                                                                  # in unit tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "host-packages: installing ${missing[*]}" >&2
created_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  created_policy=1
fi
trap '[ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
