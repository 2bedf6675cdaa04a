"""localcloud: the one way to make a local "VPS" for bulletproof-mail.

A Debian 12 systemd-nspawn container booted from a cached debootstrap image, on a host bridge
of its own, with packages reached only through a filtering HTTP proxy on the bridge. Used by
the Pulumi `local` host backend and by the integration tests. Needs root; stdlib only.
"""
